"""The source-only baseline: how well knowing only where an image came from separates the classes.

Every image is scored by its source's COVID-19 share in the train split (an image from a source the
train split did not have gets the share over all train images). The AUC of those scores is what a
model could reach by recognising the collection alone: the public COVID-19 sets confound source and
label, so a pooled AUC near this baseline says little about the lungs. Within one source every image
gets the same score, so the baseline's within-source AUC is 0.5 by construction; that is why the
within-source AUC is the number that measures disease signal.

The shares come from the model card (:attr:`models.card.ModelCard.source_prevalence`, written at
training time from the training manifest) or, for older cards, from the train split of the manifest
being evaluated; the result says which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.card import ALL_SOURCES, ModelCard
from training.intervals import bootstrap_auc_interval
from training.manifest import Manifest, ManifestRow
from training.metrics import roc_auc
from training.sources import pooled_within_source_auc

UNKNOWN_SOURCE = "unknown"
"""Source name of manifest rows without a ``source``."""

FROM_CARD = "model card"
FROM_MANIFEST = "train split of the evaluated manifest (the model card has no source_prevalence)"


def source_name(row: ManifestRow) -> str:
    """The row's source, or :data:`UNKNOWN_SOURCE` when the manifest has none."""
    return row.source or UNKNOWN_SOURCE


def source_prevalence(rows: Iterable[ManifestRow]) -> dict[str, float]:
    """COVID-19 share per source of ``rows`` (the train split), plus the overall share.

    Plain shares, no smoothing: the baseline should be exactly "what fraction of this collection's
    training images were COVID-19". The overall share is under :data:`ALL_SOURCES`. Empty when
    ``rows`` is empty.
    """
    rows = list(rows)
    if not rows:
        return {}
    total = Counter(source_name(r) for r in rows)
    covid = Counter(source_name(r) for r in rows if r.label == 1)
    shares = {s: covid[s] / total[s] for s in sorted(total)}
    shares[ALL_SOURCES] = sum(covid.values()) / len(rows)
    return shares


def baseline_scores(sources: Sequence[str], shares: Mapping[str, float]) -> np.ndarray:
    """Each image's score: its source's share, else the overall share (else 0.5 if none given)."""
    fallback = shares.get(ALL_SOURCES)
    if fallback is None:
        known = [v for k, v in shares.items() if k != ALL_SOURCES]
        fallback = float(np.mean(known)) if known else 0.5
    return np.array([shares.get(s, fallback) for s in sources], dtype=np.float64)


def resolve_shares(card: ModelCard, manifest: Manifest | None) -> tuple[dict[str, float], str]:
    """The shares to use and where they came from: the card, else the manifest's train split."""
    if card.source_prevalence:
        return dict(card.source_prevalence), FROM_CARD
    if manifest is not None:
        shares = source_prevalence(r for r in manifest.rows if r.split == "train")
        if shares:
            return shares, FROM_MANIFEST
    return {}, "unavailable (no source_prevalence in the card and no train split in the manifest)"


def source_baseline(
    labels: np.ndarray,
    sources: Sequence[str],
    card: ModelCard,
    manifest: Manifest | None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The baseline's AUC (bootstrap CI) on these images, its shares and where they came from.

    ``within_source_auc`` is 0.5 whenever some source holds both classes (all scores of a source
    are equal, and ties count one half), NaN otherwise; it is computed, not assumed, so the number
    in the report is checked by the same code that computes the model's.
    """
    y = np.asarray(labels).astype(int)
    shares, origin = resolve_shares(card, manifest)
    if not shares:
        return {
            "auc": float("nan"),
            "auc_ci_bootstrap": [float("nan"), float("nan")],
            "within_source_auc": float("nan"),
            "shares": {},
            "origin": origin,
            "unseen_sources": [],
        }
    scores = baseline_scores(sources, shares)
    seen = {k for k in shares if k != ALL_SOURCES}
    return {
        "auc": roc_auc(y, scores),
        "auc_ci_bootstrap": list(bootstrap_auc_interval(y, scores, n_boot=n_boot, seed=seed)),
        "within_source_auc": pooled_within_source_auc(y, scores, list(sources)),
        "shares": shares,
        "origin": origin,
        "unseen_sources": sorted(set(sources) - seen),
    }
