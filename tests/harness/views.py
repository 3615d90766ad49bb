"""Real non-frontal images for the view check's tests: ones the shipped network never saw.

``held_out_view`` picks from the model card's ``held_out_images`` (paths relative to
``shared/data``) an image whose ``shared/data/views`` manifest class is the one asked for
(``lateral``, ``ct_axial``, ``ct_coronal``); ``image_pixels`` reads it as 8-bit grey, ready for
:func:`tests.harness.factories.wrap_pixels`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from models.viewcheck import CARD_FILE
from tests.harness.factories import SHARED

VIEWS_MANIFEST = SHARED / "data" / "views" / "manifest.csv"


def image_pixels(path: Path) -> np.ndarray:
    """The image at ``path`` as a 2-D uint8 array (grey)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def held_out_view(view: str) -> Path:
    """The first held-out image of the card whose views-manifest ``view`` is ``view``."""
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    manifest = VIEWS_MANIFEST.read_text(encoding="utf-8")
    kinds = {f"views/{line.split(',')[0]}": line.split(",")[1] for line in manifest.splitlines()}
    return next(SHARED / "data" / p for p in card["held_out_images"] if kinds[p] == view)
