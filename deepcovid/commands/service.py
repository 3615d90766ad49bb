"""`deepcovid` commands: service (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add this group's sub-commands (none yet)."""
    del subparsers


def _unused(args: argparse.Namespace) -> int:
    return 0
