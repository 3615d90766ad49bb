"""Cross-validation folds: grouped, stratified by source x label, never the test split."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.harness.factories import CXR_DIR
from training.folds import assign_folds, cv_rows, fold_counts, group_of, held_out, inner_split
from training.manifest import Manifest, ManifestRow, read_manifest, write_manifest

K = 5


@pytest.fixture(scope="module")
def shared() -> Manifest:
    return read_manifest(CXR_DIR / "manifest.csv")


def _groups_per_fold(rows: list[ManifestRow], folds: list[int]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for row, fold in zip(rows, folds, strict=True):
        seen[group_of(row)].add(fold)
    return seen


def test_shared_manifest_folds_keep_groups_whole_and_leave_test_out(shared: Manifest) -> None:
    rows = cv_rows(shared)
    folds = assign_folds(rows, K, seed=0)
    assert {r.split for r in rows} == {"train", "val"}
    expected = [r for r in shared.rows if r.split in {"train", "val"}]
    assert rows == expected  # every train + val row once, no test row
    assert len(folds) == len(rows) and set(folds) == set(range(K))
    multi = [g for g, f in _groups_per_fold(rows, folds).items() if len(f) > 1]
    assert multi == []
    # The shared manifest has groups of up to 22 films: grouping is doing work here.
    sizes: dict[str, int] = defaultdict(int)
    for r in rows:
        sizes[group_of(r)] += 1
    assert max(sizes.values()) >= 10


def test_shared_manifest_strata_are_balanced(shared: Manifest) -> None:
    rows = cv_rows(shared)
    counts = fold_counts(rows, assign_folds(rows, K, seed=0), K)
    assert "nih_chestxray8/non_covid" in counts and "ieee8023/covid" in counts
    for stratum, per_fold in counts.items():
        target = sum(per_fold) / K
        assert max(abs(n - target) for n in per_fold) <= 2, (stratum, per_fold)
    # Every fold can measure within-source AUC: ieee8023 has both classes in each.
    assert min(counts["ieee8023/covid"]) > 0 and min(counts["ieee8023/non_covid"]) > 0


def test_deterministic_for_a_seed_and_another_seed_differs(shared: Manifest) -> None:
    rows = cv_rows(shared)
    first = assign_folds(rows, K, seed=3)
    assert assign_folds(rows, K, seed=3) == first
    assert assign_folds(rows, K, seed=4) != first


def _synthetic(path: Path) -> Manifest:
    """Three sources, groups of 1-6 films, a test split, a group with both labels."""
    records: list[dict[str, str]] = []
    for source, n_groups in (("a", 14), ("b", 9), ("c", 5)):
        for g in range(n_groups):
            for i in range(1 + (g * 7 + len(source)) % 6):
                label = "covid" if (g + i) % 3 == 0 else "non_covid"
                records.append(
                    {
                        "path": f"{source}/{g}-{i}.png",
                        "label": label,
                        "split": "val" if g % 4 == 0 else "train",
                        "source": source,
                        "split_group": f"{source}:{g}",
                    }
                )
    for i in range(6):
        records.append({"path": f"t/{i}.png", "label": "covid", "split": "test", "source": "a"})
    records.append({"path": "lone.png", "label": "covid", "split": "train", "source": "c"})
    write_manifest(path / "m.csv", records)
    return read_manifest(path / "m.csv")


def test_synthetic_manifest_grouping_stratification_and_coverage(tmp_path: Path) -> None:
    manifest = _synthetic(tmp_path)
    rows = cv_rows(manifest)
    assert all(r.split != "test" for r in rows)
    assert len(rows) == sum(r.split != "test" for r in manifest.rows)
    for k in (2, 3, 4):
        folds = assign_folds(rows, k, seed=1)
        assert all(len(f) == 1 for f in _groups_per_fold(rows, folds).values())
        assert set(folds) == set(range(k))
        for stratum, per_fold in fold_counts(rows, folds, k).items():
            assert max(per_fold) - min(per_fold) <= 4, (k, stratum, per_fold)
    lone = next(r for r in rows if r.relpath == "lone.png")
    assert group_of(lone) == "path:lone.png"  # no split_group: a group of its own


def test_too_few_groups_or_folds_is_an_error(tmp_path: Path) -> None:
    rows = cv_rows(_synthetic(tmp_path))
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(rows, 1)
    with pytest.raises(ValueError, match="groups cannot fill"):
        assign_folds(rows[:3], 5)


def test_a_fold_trains_on_the_others_and_selects_on_an_inner_part(shared: Manifest) -> None:
    rows = cv_rows(shared)
    folds = assign_folds(rows, K, seed=0)
    for fold in range(K):
        training, held = held_out(folds, fold)
        fit, inner = inner_split(rows, training, K - 1, seed=0)
        assert sorted(training + held) == list(range(len(rows)))
        assert sorted(fit + inner) == sorted(training)
        assert not set(held) & set(training) and not set(fit) & set(inner)
        held_groups = {group_of(rows[i]) for i in held}
        assert not held_groups & {group_of(rows[i]) for i in training}
        inner_groups = {group_of(rows[i]) for i in inner}
        assert not inner_groups & {group_of(rows[i]) for i in fit}
        assert abs(len(inner) - len(training) / (K - 1)) <= 8
        # the inner part has both classes of ieee8023, so within-source selection works
        assert {rows[i].label for i in inner if rows[i].source == "ieee8023"} == {0, 1}
