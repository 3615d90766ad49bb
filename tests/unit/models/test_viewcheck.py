"""The shipped view check: its weights load and match their sha256, it answers with a class and
every class's probability, and it recognises the laterals and CT images it was *not* trained on
(the card's ``held_out_images``: its fold of the grouped k-fold), so the test checks the shipped
weights, not memory of the training set."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.files import sha256_file
from models.viewcheck import (
    CARD_FILE,
    CLASSES,
    FRONTAL,
    LATERAL,
    OTHER,
    WEIGHTS_FILE,
    ViewResult,
    check_view,
    decide,
    load_view_check,
    shipped,
)
from tests.harness.factories import SHARED
from training.viewcheck_train import VIEW_CLASS, Sample

DATA = SHARED / "data"


def test_shipped_weights_match_their_card_and_are_small() -> None:
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    assert sha256_file(WEIGHTS_FILE) == card["weights_sha256"]
    assert WEIGHTS_FILE.stat().st_size < 2 * 1024 * 1024
    check = load_view_check()
    assert check.card == card and check.classes == CLASSES
    assert check.version == card["version"] and check.version
    assert sum(p.numel() for p in check.net.parameters()) == card["parameters"]
    assert not check.net.training
    assert card["held_out"]["pooled_out_of_fold_views"][LATERAL]["n"] == 45


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "view_check"
    shutil.copytree(WEIGHTS_FILE.parent, folder)
    data = bytearray((folder / WEIGHTS_FILE.name).read_bytes())
    data[-10] ^= 0xFF
    (folder / WEIGHTS_FILE.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_view_check(folder)


def test_a_card_with_other_classes_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "view_check"
    shutil.copytree(WEIGHTS_FILE.parent, folder)
    card = json.loads((folder / CARD_FILE.name).read_text(encoding="utf-8"))
    card["classes"] = ["lateral", "frontal", "other"]
    (folder / CARD_FILE.name).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ValueError, match="classes"):
        load_view_check(folder)


def test_answers_a_class_and_every_probability() -> None:
    image = np.random.default_rng(0).random((301, 257)).astype(np.float32)
    result = check_view(image)
    assert isinstance(result, ViewResult)
    assert result.view in CLASSES and set(result.probabilities) == set(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    assert shipped() is shipped()  # loaded once


def test_decision_rule() -> None:
    assert decide({FRONTAL: 0.5, LATERAL: 0.3, OTHER: 0.2}, 0.5) == FRONTAL
    assert decide({FRONTAL: 0.45, LATERAL: 0.5, OTHER: 0.05}, 0.5) == LATERAL
    assert decide({FRONTAL: 0.45, LATERAL: 0.05, OTHER: 0.5}, 0.5) == OTHER
    assert decide({FRONTAL: 0.45, LATERAL: 0.05, OTHER: 0.5}, 0.4) == FRONTAL


def _held_out_views() -> list[Sample]:
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    manifest = DATA / "views" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("shared/data/views is not here")
    with manifest.open(newline="", encoding="utf-8") as fh:
        view = {f"views/{r['path']}": r["view"] for r in csv.DictReader(fh)}
    held = card["held_out_images"]
    return [Sample(DATA / p, VIEW_CLASS[view[p]], view[p], "", "0") for p in held]


def test_held_out_laterals_and_ct_images_are_recognised() -> None:
    samples = _held_out_views()
    assert {s.label for s in samples} == {LATERAL, OTHER} and len(samples) >= 15
    wrong = []
    for s in samples:
        result = check_view(s.unit_image())
        if result.frontal:  # it would reach the classifier
            wrong.append((s.path.name, s.kind, result.probabilities))
    assert not wrong, wrong


def test_held_out_frontal_films_pass() -> None:
    """A few frontal films of the manifest's test split, one per source, are called frontal."""
    from training.manifest import ManifestRow, read_manifest

    manifest_path = DATA / "cxr" / "manifest.csv"
    if not manifest_path.is_file():
        pytest.skip("shared/data/cxr is not here")
    rows = read_manifest(manifest_path).split("test")
    first: dict[str, ManifestRow] = {}
    for row in rows:
        first.setdefault(row.source, row)
    for source, row in sorted(first.items()):
        sample = Sample(row.path, FRONTAL, source, "", "test")
        result = check_view(sample.unit_image())
        assert result.frontal, (source, row.relpath, result.probabilities)
