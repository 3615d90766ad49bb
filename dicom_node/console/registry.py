"""The model registry as the console shows it: versions, cards, metrics; and activation.

Cards are read as JSON straight from the registry's files (the layout of ``models.registry``,
named in :mod:`dicom_node.ops.health`): the node never loads a model, and importing the model
code would put PyTorch in the listener's memory for nothing. Activation is the CLI's own
``models.registry.Registry.activate`` (it checks the weights against the card, then replaces
``ACTIVE`` atomically), run in a short-lived child process for the same reason.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dicom_node.ops.health import ACTIVE_FILE, CARD_FILE

ACTIVATE_TIMEOUT_S = 300.0
_ACTIVATE = (
    "import sys\n"
    "from models.registry import Registry, RegistryError\n"
    "try:\n"
    "    Registry(sys.argv[1]).activate(sys.argv[2])\n"
    "except (RegistryError, ValueError) as exc:\n"
    "    print(exc, file=sys.stderr)\n"
    "    sys.exit(1)\n"
)


@dataclasses.dataclass(frozen=True)
class MetricRow:
    """One metric of a card: value and confidence interval, when the card has one."""

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One version of the registry and its card (``error`` when the card cannot be read)."""

    version: str
    active: bool
    card: dict[str, Any]
    error: str = ""

    @property
    def metrics(self) -> list[MetricRow]:
        """The card's metrics, by name."""
        rows = []
        for name, raw in sorted((self.card.get("metrics") or {}).items()):
            data = raw if isinstance(raw, dict) else {"value": raw}
            rows.append(
                MetricRow(
                    name,
                    _number(data.get("value")),
                    _number(data.get("ci_low")),
                    _number(data.get("ci_high")),
                    _number(data.get("ci_level")),
                )
            )
        return rows

    @property
    def summary(self) -> dict[str, Any]:
        """The card's scalar fields (metrics and nested structures left to their own tables)."""
        return {
            k: v
            for k, v in self.card.items()
            if k != "metrics" and not isinstance(v, dict | list) and v not in (None, "")
        }

    @property
    def details(self) -> dict[str, Any]:
        """The card's nested fields (data manifest, preprocessing, ...)."""
        return {k: v for k, v in self.card.items() if k != "metrics" and isinstance(v, dict | list)}


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def active_version(root: Path) -> str | None:
    """The version ``ACTIVE`` names, or None."""
    path = root / ACTIVE_FILE
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def versions(root: Path) -> list[VersionInfo]:
    """Every version with a card, newest name first."""
    if not root.is_dir():
        return []
    active = active_version(root)
    found = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if folder.name.startswith(".") or not (folder / CARD_FILE).is_file():
            continue
        found.append(version_info(root, folder.name, active))
    return found


def version_info(root: Path, version: str, active: str | None = None) -> VersionInfo:
    """One version's card; raises KeyError when there is no such version."""
    folder = root / version
    if "/" in version or version.startswith(".") or not (folder / CARD_FILE).is_file():
        raise KeyError(version)
    active = active if active is not None else active_version(root)
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return VersionInfo(version, version == active, {}, f"unreadable card: {exc}")
    return VersionInfo(version, version == active, card)


def activate(root: Path, version: str) -> None:
    """Make ``version`` active with the registry's own code; raises ValueError with its reason."""
    result = subprocess.run(
        [sys.executable, "-c", _ACTIVATE, str(root), version],
        capture_output=True,
        text=True,
        timeout=ACTIVATE_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or "activation failed").strip().splitlines()
        raise ValueError(lines[-1] if lines else "activation failed")
