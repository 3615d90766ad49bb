"""Where the package keeps what it ships (no dependencies: `python -m training` needs it)."""

from pathlib import Path

SHIPPED_REGISTRY = Path(__file__).resolve().parent.parent / "models" / "registry"
"""The model registry shipped with the package: the default without settings."""
