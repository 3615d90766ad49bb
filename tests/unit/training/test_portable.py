"""Cards and reports name no folder of the machine they were made on; manifests take any split.

Paths are written relative to the repository, the registry (``<registry>/...``) or the manifest
(``<manifest>/...``); the committed reports and cards are checked here too, so an absolute path
that lands in one fails the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.card import ModelCard
from training.manifest import read_manifest, write_manifest
from training.portable import (
    REPOSITORY,
    Anchors,
    absolute_paths,
    portable_card,
    portable_command,
    portable_path,
    resolve_portable,
)

REPO = Path(__file__).resolve().parents[3]
COMMITTED = sorted(
    [
        *(p for p in (REPO / "docs" / "model-reports").rglob("*") if p.suffix in {".json", ".md"}),
        *(REPO / "models" / "registry").glob("*/model_card.json"),
    ]
)


def test_the_committed_reports_and_cards_name_no_absolute_path() -> None:
    assert len(COMMITTED) > 10
    found = {
        str(p.relative_to(REPO)): absolute_paths(p.read_text(encoding="utf-8")) for p in COMMITTED
    }
    assert not {k: v for k, v in found.items() if v}


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("n/a, 1/2, sens / spec, https://x.org/a/b, /metrics", []),
        ("../shared/x.csv, .gpu/data/m.csv, <registry>/../runs/a", []),
        (
            '"manifest": "/work/shared/data/cxr/manifest.csv"',
            ["/work/shared/data/cxr/manifest.csv"],
        ),
        ("--run-dir /tmp/t/runs/a --x", ["/tmp/t/runs/a"]),
        ("`~/data/m.csv` and C:\\data\\m.csv", ["~/data/m.csv", "C:\\data\\m.csv"]),
    ],
)
def test_absolute_paths_are_found_and_nothing_else(text: str, paths: list[str]) -> None:
    assert absolute_paths(text) == paths


def test_paths_are_written_relative_to_the_nearest_anchor(tmp_path: Path) -> None:
    repo, registry = tmp_path / "checkout", tmp_path / "train" / "registry"
    anchors = Anchors(registry=registry, manifest_dir=tmp_path / "data", repository=repo)
    assert portable_path(repo / ".gpu" / "m.csv", anchors) == ".gpu/m.csv"
    assert portable_path(tmp_path / "shared" / "m.csv", anchors) == "../shared/m.csv"
    assert portable_path(registry, anchors) == "<registry>"
    assert portable_path(tmp_path / "train" / "runs" / "a", anchors) == "<registry>/../runs/a"
    assert portable_path(tmp_path / "data" / "images" / "a.jpg", anchors, manifest=True) == (
        "<manifest>/images/a.jpg"
    )
    assert portable_path("/elsewhere/far/away/m.csv", anchors) == "<elsewhere>/away/m.csv"
    assert resolve_portable("<registry>/../runs/a", registry) == tmp_path / "train" / "runs" / "a"
    assert resolve_portable("pyproject.toml") == REPOSITORY / "pyproject.toml"


def test_a_recorded_command_keeps_its_meaning_without_the_machine(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    anchors = Anchors(registry=registry)
    command = (
        f"deepcovid train --manifest {REPOSITORY / 'data' / 'm.csv'} --registry {registry} "
        f"--run-dir={tmp_path / 'runs' / 'r1'} --init imagenet --notes 'a b' --scale 0.8 1.2"
    )
    assert portable_command(command, anchors) == (
        "deepcovid train --manifest data/m.csv --registry <registry> "
        "--run-dir=<registry>/../runs/r1 --init imagenet --notes 'a b' --scale 0.8 1.2"
    )


def test_a_card_is_made_portable(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    card = ModelCard(
        architecture="squeezenet1_1",
        training_manifest=str(tmp_path / "m.csv"),
        training_command=f"python -m training train --registry {registry}",
        training_parameters={"manifest": str(tmp_path / "m.csv"), "init": "none", "lr": 1e-3},
        notes=f"trained from {tmp_path}/runs/x",
    )
    portable = portable_card(card, Anchors(registry=registry), tmp_path / "m.csv")
    assert portable.training_manifest == "<registry>/../m.csv"
    assert portable.training_parameters == {
        "manifest": "<registry>/../m.csv",
        "init": "none",
        "lr": 1e-3,
    }
    assert not absolute_paths(portable.to_json())


def test_any_split_name_is_a_split(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    rows = [
        {"path": "a.jpg", "label": "covid", "split": "train"},
        {"path": "b.jpg", "label": "non_covid", "split": "holdout"},
        {"path": "c.jpg", "label": "covid", "split": "val"},
        {"path": "d.jpg", "label": "covid", "split": "external"},
    ]
    write_manifest(path, rows)
    manifest = read_manifest(path)
    assert manifest.splits == ("train", "val", "holdout", "external")
    assert [r.relpath for r in manifest.split("holdout")] == ["b.jpg"]
    assert manifest.counts()["external"] == {"non_covid": 0, "covid": 1}
    with pytest.raises(ValueError, match="its splits: train, val, holdout, external"):
        manifest.split("test")


def test_absolute_image_paths_are_reported_relative(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = [
        {"path": str(data / "images" / "a.jpg"), "label": "covid", "split": "train"},
        {"path": "/far/away/cxr/images/b.jpg", "label": "non_covid", "split": "train"},
    ]
    write_manifest(tmp_path / "m.csv", rows)
    a, b = read_manifest(tmp_path / "m.csv", data_root=data).rows
    assert a.relpath == "images/a.jpg" and a.path == data / "images" / "a.jpg"
    assert b.relpath == "<elsewhere>/cxr/images/b.jpg"
