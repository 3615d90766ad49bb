"""``worker.view.check``: the pixels decide, and the verdict says what the header said."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from models.viewcheck import CARD_FILE, FRONTAL, LATERAL, OTHER, ViewResult
from tests.harness.factories import SHARED, wrap_pixels
from worker.view import LATERAL_REASON, OTHER_REASON, ViewVerdict, check


def _held_out_lateral() -> np.ndarray:
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    manifest = SHARED / "data" / "views" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("shared/data/views is not here")
    kinds = dict(line.split(",")[:2] for line in manifest.read_text().splitlines()[1:])
    path = next(p for p in card["held_out_images"] if kinds[p.removeprefix("views/")] == "lateral")
    with Image.open(SHARED / "data" / path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


@pytest.mark.parametrize("header", [None, "PA"])
def test_a_lateral_is_rejected_whatever_the_header_says(header: str | None) -> None:
    pixels = _held_out_lateral()
    ds = wrap_pixels(pixels, view_position=header)
    verdict = check(ds, pixels.astype(np.float32) / 255.0)
    assert not verdict.ok and verdict.reason == LATERAL_REASON
    assert verdict.header_view == header
    assert verdict.note.startswith(f"view check {verdict.version}: lateral (frontal ")
    assert verdict.note.endswith(f"header View Position {header or '(none)'}: the image decides")


def test_verdict_words() -> None:
    probs = {FRONTAL: 0.9, LATERAL: 0.05, OTHER: 0.05}
    frontal = ViewVerdict(ViewResult(FRONTAL, probs), "v1", "AP", None)
    assert frontal.ok and frontal.agrees
    assert frontal.note == (
        "view check v1: frontal (frontal 0.90, lateral 0.05, other 0.05); header View Position AP"
    )
    unsaid = ViewVerdict(ViewResult(FRONTAL, probs), "v1", None, None)
    assert unsaid.ok and not unsaid.agrees and unsaid.note.endswith(": the image decides")
    other = ViewVerdict(ViewResult(OTHER, probs), "v1", "PA", OTHER_REASON)
    assert not other.ok and not other.agrees
