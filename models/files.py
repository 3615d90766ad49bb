"""The registry's files: durable writes (a reader sees the old file or the new one, never half)
and the number formats a weights file may hold."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

WEIGHTS_DTYPES: tuple[str, ...] = ("float32", "float16")
"""Formats of the floating-point tensors in ``weights.pt``. Loading always gives float32
parameters; ``float16`` halves the file (EfficientNet-Lite0: 13.5 -> 6.8 MB, under the
repository's 10 MB limit for committed files). Torch-free, so the training CLI can validate it."""


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
