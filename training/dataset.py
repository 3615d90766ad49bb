"""Images of a manifest split as one tensor, and the order in which an epoch visits them.

Every image goes through :func:`models.preprocessing.load_image_file` and
:func:`models.preprocessing.prepare_gray` once (the same functions serving uses: the spec's lung
crop, equalisation and lung mask, then the resize) and is kept as gray ``[N, 1, S, S]`` in [0, 1];
augmentation works on those and :func:`models.preprocessing.normalise` finishes the model input.
A dataset of ~1,500 chest X-rays at 224 px is ~300 MB of float32, small enough to keep in memory
(or on the GPU) for the whole run, which removes the data loader from the training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from models.preprocessing import PreprocessSpec, load_image_file, prepare_gray
from training.manifest import ManifestRow


@dataclass
class SplitData:
    """One split in memory: gray images, labels and the manifest rows they came from."""

    gray: torch.Tensor
    """``[N, 1, S, S]`` float32 in [0, 1]."""
    labels: torch.Tensor
    """``[N]`` int64 class indices (1 = COVID-19)."""
    rows: list[ManifestRow]

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device: torch.device | str) -> SplitData:
        """The same split with its tensors on ``device``."""
        return SplitData(self.gray.to(device), self.labels.to(device), self.rows)


def _load_one(row: ManifestRow, spec: PreprocessSpec) -> torch.Tensor:
    try:
        return prepare_gray(load_image_file(row.path), spec)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read manifest image {row.relpath}: {exc}") from exc


def load_split(
    rows: Sequence[ManifestRow], input_size: int | PreprocessSpec, workers: int = 4
) -> SplitData:
    """Decode and prepare ``rows`` in a thread pool (PIL, numpy and torch release the GIL).

    ``input_size`` is a whole :class:`PreprocessSpec` (a model card's, so lung crop, mask and
    equalisation match serving) or just a size (the paper's preprocessing: resize only).
    """
    if not rows:
        raise ValueError("no rows to load")
    spec = input_size if isinstance(input_size, PreprocessSpec) else PreprocessSpec(input_size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = list(pool.map(lambda r: _load_one(r, spec), rows))
    gray = torch.stack(images)
    labels = torch.tensor([r.label for r in rows], dtype=torch.long)
    return SplitData(gray=gray, labels=labels, rows=list(rows))


def epoch_order(
    labels: np.ndarray,
    *,
    epoch: int,
    seed: int,
    covid_copies: int = 1,
    oversample: bool = False,
    augment: str = "covid",
) -> tuple[np.ndarray, np.ndarray]:
    """Indices an epoch visits, shuffled, and which of those visits are augmented.

    ``covid_copies`` repeats each COVID-19 image (the paper's ×5 augmentation: every repeat gets
    its own random transform). ``oversample`` then draws extra images with replacement from the
    smaller class until both classes are equally frequent. ``augment`` is ``covid`` (augment the
    COVID-19 visits, as the paper), ``all`` or ``none``. The order depends only on
    ``(seed, epoch)``, so a resumed run visits the same images as an uninterrupted one.
    """
    if covid_copies < 1:
        raise ValueError(f"covid_copies must be at least 1, got {covid_copies}")
    if augment not in {"covid", "all", "none"}:
        raise ValueError(f"augment must be covid, all or none, got {augment!r}")
    rng = np.random.default_rng([seed, epoch])
    y = np.asarray(labels).astype(int)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    parts = [neg, np.tile(pos, covid_copies)]
    if oversample and pos.size and neg.size:
        n_pos, n_neg = pos.size * covid_copies, neg.size
        if n_pos < n_neg:
            parts.append(rng.choice(pos, n_neg - n_pos, replace=True))
        elif n_neg < n_pos:
            parts.append(rng.choice(neg, n_pos - n_neg, replace=True))
    order = np.concatenate(parts)
    rng.shuffle(order)
    if augment == "all":
        mask = np.ones(order.size, dtype=bool)
    elif augment == "covid":
        mask = y[order] == 1
    else:
        mask = np.zeros(order.size, dtype=bool)
    return order, mask
