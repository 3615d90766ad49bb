"""Metrics within one image source: what a model knows beyond *where* an image came from.

The public collections confound source and label (COVID-19 images are mostly publication figures,
non-COVID mostly NIH), so a pooled AUC rewards recognising the collection. Within one source that
holds both classes, the source cannot help: the AUC there measures the disease signal. The pooled
within-source AUC combines those sources, each weighted by its number of (COVID-19, non-COVID)
pairs, which is the AUC of the pairs that never cross a source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourceAUC:
    """The AUC of one source with both classes, and how many pairs it rests on."""

    source: str
    auc: float
    n_pos: int
    n_neg: int

    @property
    def pairs(self) -> int:
        return self.n_pos * self.n_neg


def pair_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The Mann-Whitney AUC (ties count one half); NaN without both classes."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def per_source_auc(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    sources: Sequence[str],
) -> list[SourceAUC]:
    """One :class:`SourceAUC` per source that holds both classes, sorted by source name."""
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    src = np.asarray(list(sources))
    if not (y.size == s.size == src.size):
        raise ValueError("labels, scores and sources differ in length")
    out: list[SourceAUC] = []
    for name in sorted(set(src.tolist())):
        sel = src == name
        n_pos = int((y[sel] == 1).sum())
        n_neg = int((y[sel] == 0).sum())
        if n_pos and n_neg:
            out.append(SourceAUC(str(name), pair_auc(y[sel], s[sel]), n_pos, n_neg))
    return out


def pooled_within_source_auc(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    sources: Sequence[str],
) -> float:
    """The AUC over (COVID-19, non-COVID) pairs from the same source; NaN if no source has both."""
    rows = per_source_auc(labels, scores, sources)
    pairs = sum(r.pairs for r in rows)
    if pairs == 0:
        return float("nan")
    return float(sum(r.auc * r.pairs for r in rows) / pairs)
