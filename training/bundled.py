"""Write a small network to ship in the repository: the counterpart of :mod:`models.bundled`.

The lung segmenter and the view check are trained by their own scripts
(``training/lungseg_train.py``, ``training/viewcheck_train.py``) and saved the same way, as
:func:`models.bundled.load_checked` reads them: a float16 state dict (half the file; loading
widens it to float32) and the card with that file's sha256. One definition of those steps, here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.bundled import CARD_NAME, WEIGHTS_NAME
from models.files import sha256_file, write_model_file


def save_bundled(net: nn.Module, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``weights.pt`` (float16 state dict) and ``card.json`` (``card`` plus the weights'
    sha256 and dtype) to ``out``, each atomically; returns the card as written."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    weights = out / WEIGHTS_NAME
    write_model_file(weights, buf.getvalue())
    card = {**card, "weights_sha256": sha256_file(weights), "weights_dtype": "float16"}
    text = json.dumps(card, indent=2, sort_keys=True) + "\n"
    write_model_file(out / CARD_NAME, text.encode("utf-8"))
    return card
