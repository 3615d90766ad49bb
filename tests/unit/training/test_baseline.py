"""The source-only baseline (card field and manifest fallback) and the card's new field.

Hand example: shares a 0.8, b 0.2, overall 0.5. Images: a = [COVID, COVID, non], b = [COVID, non,
non], plus one COVID image of an unseen source c (scored 0.5). Positives 0.8, 0.8, 0.2, 0.5 and
negatives 0.8, 0.2, 0.2 give (2.5 + 2.5 + 1 + 2) / 12 = 2/3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.paths import SHIPPED_REGISTRY
from models.card import ALL_SOURCES, ModelCard
from training.baseline import (
    FROM_CARD,
    FROM_MANIFEST,
    baseline_scores,
    source_baseline,
    source_prevalence,
)
from training.manifest import ManifestRow, read_manifest, write_manifest

SHARES = {"a": 0.8, "b": 0.2, ALL_SOURCES: 0.5}
LABELS = np.array([1, 1, 0, 1, 0, 0, 1])
SOURCES = ["a", "a", "a", "b", "b", "b", "c"]


def _row(label: int, source: str, split: str = "train") -> ManifestRow:
    return ManifestRow(Path("/x.jpg"), "x.jpg", label, split, source=source)


def test_source_prevalence_by_hand() -> None:
    rows = [_row(1, "a"), _row(1, "a"), _row(1, "a"), _row(0, "a"), _row(1, "b"), _row(0, "")]
    assert source_prevalence(rows) == {
        "a": 0.75,
        "b": 1.0,
        "unknown": 0.0,
        ALL_SOURCES: pytest.approx(4 / 6),
    }
    assert source_prevalence([]) == {}


def test_unknown_source_gets_the_overall_share() -> None:
    assert baseline_scores(["a", "c", "b"], SHARES).tolist() == [0.8, 0.5, 0.2]
    # Without an overall share: the mean of the source shares.
    assert baseline_scores(["c"], {"a": 0.8, "b": 0.2}).tolist() == [pytest.approx(0.5)]


def test_baseline_from_the_card_field() -> None:
    card = ModelCard(architecture="resnet18", source_prevalence=SHARES)
    out = source_baseline(LABELS, SOURCES, card, None, n_boot=200)
    assert out["origin"] == FROM_CARD
    assert out["auc"] == pytest.approx(2 / 3)
    assert out["within_source_auc"] == pytest.approx(0.5)  # by construction: ties inside a source
    assert out["unseen_sources"] == ["c"]
    lo, hi = out["auc_ci_bootstrap"]
    assert lo <= out["auc"] <= hi


def test_baseline_falls_back_to_the_manifest_train_split(tmp_path: Path) -> None:
    records = [
        {"path": f"{i}.jpg", "label": lab, "split": split, "source": src}
        for i, (lab, split, src) in enumerate(
            [
                ("covid", "train", "a"),
                ("covid", "train", "a"),
                ("covid", "train", "a"),
                ("non_covid", "train", "a"),
                ("covid", "train", "b"),
                ("non_covid", "train", "b"),
                ("non_covid", "train", "b"),
                ("non_covid", "train", "b"),
                ("covid", "test", "b"),  # not train: must not count
                ("covid", "test", "b"),
            ]
        )
    ]
    write_manifest(tmp_path / "m.csv", records)
    manifest = read_manifest(tmp_path / "m.csv")
    old_card = ModelCard(architecture="resnet18")
    out = source_baseline(np.array([1, 0, 1]), ["a", "b", "b"], old_card, manifest, n_boot=50)
    assert out["origin"] == FROM_MANIFEST
    assert out["shares"] == {"a": 0.75, "b": 0.25, ALL_SOURCES: 0.5}
    # Scores 0.75, 0.25, 0.25: positives (0.75, 0.25) vs negative 0.25 -> (1 + 0.5) / 2.
    assert out["auc"] == pytest.approx(0.75)
    # The card's field wins over the manifest when present.
    card = old_card.replace(source_prevalence={"a": 0.1, "b": 0.9})
    assert source_baseline(np.array([1, 0]), ["a", "b"], card, manifest)["auc"] == 0.0


def test_card_round_trip_with_and_without_source_prevalence() -> None:
    old = ModelCard(architecture="squeezenet1_1", threshold=0.3)
    text = old.to_json()
    assert "source_prevalence" not in json.loads(text)  # old cards stay as they were
    assert ModelCard.from_json(text) == old
    new = old.replace(source_prevalence=SHARES)
    data = json.loads(new.to_json())
    assert data["source_prevalence"] == {"*": 0.5, "a": 0.8, "b": 0.2}
    again = ModelCard.from_json(new.to_json())
    assert again == new and again.source_prevalence == SHARES


def test_old_card_json_without_the_field_loads() -> None:
    data = json.loads((SHIPPED_REGISTRY / "squeezenet1_1-c" / "model_card.json").read_text())
    data.pop("source_prevalence", None)
    card = ModelCard.from_dict(data)
    assert card.source_prevalence == {}


@pytest.mark.parametrize("bad", [{"a": 1.5}, {"a": -0.1}, {"": 0.5}, {"a": float("nan")}])
def test_card_rejects_impossible_shares(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="source_prevalence"):
        ModelCard(architecture="resnet18", source_prevalence=bad)


def test_make_card_records_the_train_split_shares(tmp_path: Path) -> None:
    from torch import nn

    from training.config import TrainConfig
    from training.release import make_card
    from training.trainer import TrainResult

    records = [
        {"path": "1.jpg", "label": "covid", "split": "train", "source": "a"},
        {"path": "2.jpg", "label": "non_covid", "split": "train", "source": "a"},
        {"path": "3.jpg", "label": "non_covid", "split": "train", "source": "n"},
        {"path": "4.jpg", "label": "covid", "split": "val", "source": "n"},
    ]
    write_manifest(tmp_path / "m.csv", records)
    manifest = read_manifest(tmp_path / "m.csv")
    card = make_card(
        TrainConfig(manifest=str(tmp_path / "m.csv"), arch="resnet18"),
        TrainResult(model=nn.Identity(), best_epoch=1),
        manifest,
        np.array([1, 0, 1, 0]),
        np.array([0.9, 0.2, 0.7, 0.4]),
        command="test",
    )
    assert card.source_prevalence == {"a": 0.5, "n": 0.0, ALL_SOURCES: pytest.approx(1 / 3)}
