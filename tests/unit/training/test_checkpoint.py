"""Checkpoints round-trip, are private, and a save that fails keeps the previous one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from training.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, {"epoch": 3, "weights": {"w": torch.ones(2)}})
    data = load_checkpoint(path)
    assert data["epoch"] == 3 and torch.equal(data["weights"]["w"], torch.ones(2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception, match=r"pickle|lambda"):
        save_checkpoint(path, {"epoch": 2, "unsaveable": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
