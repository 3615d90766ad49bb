"""Leave-one-source-out manifests, on a hand-made manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.loso import leave_one_source_out, mixed_sources, write_loso_manifests
from training.manifest import read_manifest, write_manifest


def _rec(path: str, label: str, split: str, source: str, group: str = "") -> dict[str, str]:
    return {"path": path, "label": label, "split": split, "source": source, "split_group": group}


RECORDS = [
    _rec("a1.jpg", "covid", "train", "ieee", "g1"),
    _rec("a2.jpg", "non_covid", "val", "ieee", "g2"),
    _rec("a3.jpg", "covid", "test", "ieee", "g3"),
    _rec("b1.jpg", "covid", "train", "fig", "g1"),  # near-duplicate of a1: must not train
    _rec("b2.jpg", "non_covid", "train", "fig", "g4"),
    _rec("b3.jpg", "covid", "test", "fig", "g5"),
    _rec("n1.jpg", "non_covid", "train", "nih", "g6"),
    _rec("n2.jpg", "non_covid", "val", "nih", "g7"),
]


def test_mixed_sources() -> None:
    assert mixed_sources(RECORDS) == ["fig", "ieee"]


def test_held_out_source_is_the_whole_test_split() -> None:
    out = leave_one_source_out(RECORDS, "ieee")
    by_path = {r["path"]: r["split"] for r in out}
    assert by_path == {
        "a1.jpg": "test",
        "a2.jpg": "test",
        "a3.jpg": "test",
        "b2.jpg": "train",
        "n1.jpg": "train",
        "n2.jpg": "val",
    }  # b1 shares a group with a1, b3 was another source's test image
    assert RECORDS[1]["split"] == "val"  # the input is not modified
    with pytest.raises(ValueError, match="no images"):
        leave_one_source_out(RECORDS, "mhh")


def test_written_manifests_find_the_same_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_manifest(data / "m.csv", RECORDS)
    paths = write_loso_manifests(data / "m.csv", tmp_path / "loso")
    assert [p.name for p in paths] == ["loso-fig.csv", "loso-ieee.csv"]
    manifest = read_manifest(paths[1])
    assert {r.path for r in manifest.rows} <= {(data / r["path"]).resolve() for r in RECORDS}
    assert {r.source for r in manifest.split("test")} == {"ieee"}
    assert "ieee" not in {r.source for r in manifest.split("train")}
