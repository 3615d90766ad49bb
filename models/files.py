"""The registry's files: durable writes (a reader sees the old file or the new one, never half)
and the number formats a weights file may hold."""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.atomic import atomic_write

WEIGHTS_DTYPES: tuple[str, ...] = ("float32", "float16")
"""Formats of the floating-point tensors in ``weights.pt``. Loading always gives float32
parameters; ``float16`` halves the file (EfficientNet-Lite0: 13.5 -> 6.8 MB, under the
repository's 10 MB limit for committed files). Torch-free, so the training CLI can validate it."""


MODEL_FILE_MODE = 0o644
"""Mode of the registry's files: they hold no patient data, and the worker that reads them may
run as another account than the trainer that wrote them."""


def write_model_file(path: Path, data: bytes) -> None:
    """Write a registry file (card, ``ACTIVE``, domain statistics) durably and atomically.

    Mode :data:`MODEL_FILE_MODE`; the folder is created when missing. See
    :func:`common.atomic.atomic_write` for the steps and why each is there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode=MODEL_FILE_MODE)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
