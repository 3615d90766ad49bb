"""Images of a manifest split as one tensor, and the order in which an epoch visits them.

The order can work against the source shortcut: *hard negatives* (non-COVID pneumonias of the
sources the COVID-19 images came from) can be visited more often, and an epoch can spread its
visits over the image sources equally or by a temperature instead of as the data is.

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

    @property
    def sources(self) -> list[str]:
        """The source of every image (``unknown`` where the manifest names none)."""
        return [r.source or "unknown" for r in self.rows]


def hard_negative_mask(rows: Sequence[ManifestRow], sources: Sequence[str]) -> np.ndarray:
    """Which rows are hard negatives: non-COVID with a disease finding, from one of ``sources``.

    In the shared manifest these are the other pneumonias (SARS, bacterial, Pneumocystis, ...) of
    the Cohen collection (``ieee8023``): the same kind of publication figure as its COVID-19
    images, so only the disease can tell them apart. NIH's "Pneumonia" films are not included by
    default: their source alone already separates them from COVID-19.
    """
    wanted = set(sources)
    return np.array(
        [r.label == 0 and r.finding_group == "other_disease" and r.source in wanted for r in rows],
        dtype=bool,
    )


def _load_one(row: ManifestRow, spec: PreprocessSpec) -> torch.Tensor:
    try:
        return prepare_gray(load_image_file(row.path), spec)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read manifest image {row.relpath}: {exc}") from exc


def load_split(
    rows: Sequence[ManifestRow], spec: PreprocessSpec | int, workers: int = 4
) -> SplitData:
    """Decode and prepare ``rows`` per ``spec`` (or just an input size) in a thread pool.

    The spec is the one the model card records (lung crop, mask and equalisation as serving
    applies them); a bare size is the paper's preprocessing (resize only). PIL, numpy and torch
    release the GIL, so threads overlap the decoding.
    """
    if not rows:
        raise ValueError("no rows to load")
    chosen = spec if isinstance(spec, PreprocessSpec) else PreprocessSpec(input_size=spec)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = list(pool.map(lambda r: _load_one(r, chosen), rows))
    gray = torch.stack(images)
    labels = torch.tensor([r.label for r in rows], dtype=torch.long)
    return SplitData(gray=gray, labels=labels, rows=list(rows))


def source_quotas(
    sources: Sequence[str], total: int, sampling: str, temperature: float = 1.0
) -> dict[str, int]:
    """Visits per source in an epoch of ``total`` visits (largest remainder, so they add up).

    ``equal``: every source the same share; ``temperature``: shares proportional to
    ``n_images ** (1 / temperature)`` (1: the data's own shares; larger: flatter).
    """
    names, counts = np.unique(np.asarray([str(s) for s in sources]), return_counts=True)
    if sampling == "equal":
        weights = np.ones(names.size)
    elif sampling == "temperature":
        weights = counts.astype(np.float64) ** (1.0 / temperature)
    else:
        raise ValueError(f"source sampling must be equal or temperature, got {sampling!r}")
    raw = total * weights / weights.sum()
    quota = np.floor(raw).astype(int)
    # Ties of the remainder go to the earlier name: deterministic, independent of the seed.
    for i in np.argsort(-(raw - quota), kind="stable")[: total - int(quota.sum())]:
        quota[i] += 1
    return {str(n): int(q) for n, q in zip(names, quota, strict=True)}


def _spread(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` entries of ``pool``: whole passes, then a remainder drawn without replacement.

    Every entry is visited ``count // len(pool)`` or one more times: as even as an epoch can be.
    """
    passes, rest = divmod(count, pool.size)
    return np.concatenate([np.tile(pool, passes), rng.choice(pool, rest, replace=False)])


def epoch_order(
    labels: np.ndarray,
    *,
    epoch: int,
    seed: int,
    covid_copies: int = 1,
    oversample: bool = False,
    augment: str = "covid",
    hard_negatives: np.ndarray | None = None,
    hard_negative_copies: int = 1,
    sources: Sequence[str] | None = None,
    source_sampling: str = "none",
    source_temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices an epoch visits, shuffled, and which of those visits are augmented.

    ``covid_copies`` repeats each COVID-19 image (the paper's ×5 augmentation: every repeat gets
    its own random transform) and ``hard_negative_copies`` each image ``hard_negatives`` marks.
    ``oversample`` then draws extra images with replacement from the smaller class until both
    classes are equally frequent. ``augment`` is ``covid`` (augment the COVID-19 visits, as the
    paper), ``all`` or ``none``.

    With ``source_sampling`` ``equal`` or ``temperature`` (``sources`` then names each image's
    source), the epoch keeps the length the class logic gives, but its visits are split over the
    sources by :func:`source_quotas`, and each source's quota is filled from that source's part
    of the class-logic visits (so COVID-19 and hard-negative copies still weigh within a source).

    The order depends only on ``(seed, epoch)``, so a resumed run visits the same images as an
    uninterrupted one; with the new options at their defaults it is the order of earlier versions.
    """
    if covid_copies < 1 or hard_negative_copies < 1:
        raise ValueError(
            f"covid_copies and hard_negative_copies must be at least 1, got "
            f"{covid_copies} and {hard_negative_copies}"
        )
    if augment not in {"covid", "all", "none"}:
        raise ValueError(f"augment must be covid, all or none, got {augment!r}")
    rng = np.random.default_rng([seed, epoch])
    y = np.asarray(labels).astype(int)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    if hard_negatives is not None and hard_negative_copies > 1:
        hard = np.flatnonzero(np.asarray(hard_negatives, dtype=bool) & (y == 0))
        neg = np.concatenate([neg, np.tile(hard, hard_negative_copies - 1)])
    parts = [neg, np.tile(pos, covid_copies)]
    if oversample and pos.size and neg.size:
        n_pos, n_neg = pos.size * covid_copies, neg.size
        if n_pos < n_neg:
            parts.append(rng.choice(pos, n_neg - n_pos, replace=True))
        elif n_neg < n_pos:
            parts.append(rng.choice(neg, n_pos - n_neg, replace=True))
    order = np.concatenate(parts)
    if source_sampling != "none":
        if sources is None or len(sources) != y.size:
            raise ValueError("source sampling needs the source of every image")
        src = np.asarray(list(sources), dtype=object).astype(str)
        quotas = source_quotas(src.tolist(), order.size, source_sampling, source_temperature)
        order = np.concatenate(
            [_spread(order[src[order] == name], quota, rng) for name, quota in quotas.items()]
        )
    rng.shuffle(order)
    if augment == "all":
        mask = np.ones(order.size, dtype=bool)
    elif augment == "covid":
        mask = y[order] == 1
    else:
        mask = np.zeros(order.size, dtype=bool)
    return order, mask
