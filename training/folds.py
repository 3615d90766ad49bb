"""Grouped, stratified K-fold assignment over a manifest's train + val rows.

Cross-validation compares recipes on films no model of a fold saw. Two rules make that hold:

- **grouped**: every ``split_group`` (one patient; near-duplicates of one film across sources
  share a group) lies in exactly one fold, so no fold's model trained on a copy or a sibling of a
  film it is scored on;
- **stratified** by source x label: each fold holds about ``1/K`` of every (source, label)
  stratum, so every fold has the mixed sources the within-source AUC needs, and fold-to-fold
  differences are the recipe's noise, not the data's mix.

The test split is never touched: :func:`cv_rows` keeps ``train`` and ``val`` only.

The assignment is greedy: groups are placed largest first (ties in a seeded random order), each
into the fold that holds the fewest rows of the group's strata (the fold that most needs them;
ties: the fold with fewer rows, then the lowest index). Placing the large groups while the folds
are empty and the single films last, each into the fold that is shortest in its stratum, leaves
every stratum within one or two rows of ``n / K`` on the shared manifest. Deterministic for a
seed; another seed reorders groups of equal size and so gives another assignment.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from training.manifest import LABELS, Manifest, ManifestRow

CV_SPLITS: tuple[str, ...] = ("train", "val")
"""The splits cross-validation pools; ``test`` (and any other) stays out."""
DEFAULT_FOLDS = 5

Stratum = tuple[str, str]
"""(source, label name)."""


def cv_rows(manifest: Manifest) -> list[ManifestRow]:
    """The rows cross-validation uses: train and val, in manifest order."""
    rows = [r for r in manifest.rows if r.split in CV_SPLITS]
    if not rows:
        raise ValueError(f"manifest {manifest.path.name} has no train or val rows")
    return rows


def group_of(row: ManifestRow) -> str:
    """The row's ``split_group``; a row without one is a group of its own (its path)."""
    return row.split_group or f"path:{row.relpath}"


def stratum_of(row: ManifestRow) -> Stratum:
    """(source, label) of a row: what each fold should hold its share of."""
    return (row.source or "unknown", LABELS[row.label])


def assign_folds(rows: Sequence[ManifestRow], k: int = DEFAULT_FOLDS, seed: int = 0) -> list[int]:
    """The fold (0 .. k-1) of every row, grouped by :func:`group_of`, stratified by
    :func:`stratum_of` (module docstring: the greedy rule)."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    members: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        members[group_of(row)].append(i)
    if len(members) < k:
        raise ValueError(f"{len(members)} groups cannot fill {k} folds")
    names = sorted(members)
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    shuffled.sort(key=lambda name: -len(members[name]))  # stable: seeded order within a size
    held: list[Counter[Stratum]] = [Counter() for _ in range(k)]
    sizes = [0] * k
    fold_of = [0] * len(rows)
    for name in shuffled:
        needs = Counter(stratum_of(rows[i]) for i in members[name])
        best = min(
            range(k),
            key=lambda f: (sum(n * held[f][s] for s, n in needs.items()), sizes[f], f),
        )
        held[best].update(needs)
        sizes[best] += len(members[name])
        for i in members[name]:
            fold_of[i] = best
    return fold_of


def fold_counts(rows: Sequence[ManifestRow], folds: Sequence[int], k: int) -> dict[str, list[int]]:
    """Rows per fold of every stratum, keyed ``source/label`` (for the CV summary and tests)."""
    table: dict[str, list[int]] = {}
    for row, fold in zip(rows, folds, strict=True):
        source, label = stratum_of(row)
        table.setdefault(f"{source}/{label}", [0] * k)[fold] += 1
    return dict(sorted(table.items()))


def held_out(folds: Sequence[int], fold: int) -> tuple[list[int], list[int]]:
    """Indices of the rows the fold's model trains on (every other fold) and of the held-out
    fold it is scored on."""
    training = [i for i, f in enumerate(folds) if f != fold]
    held = [i for i, f in enumerate(folds) if f == fold]
    if not held:
        raise ValueError(f"fold {fold} is empty")
    return training, held


def inner_split(
    rows: Sequence[ManifestRow], training: Sequence[int], parts: int, seed: int = 0
) -> tuple[list[int], list[int]]:
    """``training`` split into the rows a model fits on and an inner validation part (one of
    ``parts`` grouped, stratified parts of it, :func:`assign_folds`): the split the recipe's
    epoch selection sees, carved from the training folds so the held-out fold decides nothing."""
    parts_of = assign_folds([rows[i] for i in training], parts, seed)
    fit = [i for i, p in zip(training, parts_of, strict=True) if p != 0]
    inner = [i for i, p in zip(training, parts_of, strict=True) if p == 0]
    return fit, inner
