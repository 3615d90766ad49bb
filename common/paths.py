"""Where the package keeps what it ships (no dependencies: `python -m training` needs it)."""

from pathlib import Path

SHIPPED_REGISTRY = Path(__file__).resolve().parent.parent / "models" / "registry"
"""The model registry shipped with the package: the default without settings."""

# The layout of a registry folder: ``ACTIVE`` names the active version; each version's folder
# holds its weights and its model card. The node's health check reads them without importing
# the model code (and torch), so the names live here, once.
ACTIVE_FILE = "ACTIVE"
"""File of the registry folder that names the active version."""
CARD_FILE = "model_card.json"
"""A version's model card (JSON)."""
WEIGHTS_FILE = "weights.pt"
"""A version's weights (a state dict)."""
