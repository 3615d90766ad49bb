"""Per-epoch checkpoints of a run folder, so training resumes after an interruption.

``last.pt`` holds everything needed to continue (weights, optimizer, epoch, history, best score,
config); ``best.pt`` the weights of the best epoch by validation. Both are plain dicts of tensors
and JSON-like values, written to a temporary file and renamed, and read with
``torch.load(weights_only=True)``: no pickled classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_file

CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` durably and atomically (:func:`common.atomic.atomic_file`, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT}")
    return data
