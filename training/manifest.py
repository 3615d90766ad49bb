"""Datasets described by a manifest CSV: one row per image, so a site can retrain on its own data.

Required columns: ``path`` (relative to the manifest's folder, or to ``data_root``), ``label``
(``covid`` / ``non_covid``, the class names of :data:`models.architectures.CLASSES`) and ``split``
(``train`` / ``val`` / ``test``, or any other name a site gives a set of its own, such as
``holdout`` or ``external``: evaluation takes any split there is). Optional: ``finding`` (the
source's own finding text, used to separate "No Finding" from other disease in the score
histograms), ``source`` (where the image came from, for the per-source metrics that expose
shortcut learning) and ``split_group`` (images that share it stay in one cross-validation
fold). Extra columns are ignored.

Plain :mod:`csv` rather than pandas: the training path must run where only torch, torchvision,
scikit-learn and matplotlib are installed.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.portable import Anchors, portable_path

LABELS: tuple[str, str] = ("non_covid", "covid")
"""Manifest labels in class-index order (index 1 is COVID-19, as in ``models.architectures``)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits training uses (``train`` and ``val``) and the usual evaluation split; a manifest may
name others."""
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A split name becomes a metric key prefix (``holdout/auc``) and a folder name: no ``/``."""
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "split")


@dataclass(frozen=True)
class ManifestRow:
    """One image of a manifest."""

    path: Path
    """Absolute path of the image file."""
    relpath: str
    """The path as written in the manifest, relative to its folder (stable key for reports;
    an absolute path is made relative, see :func:`_report_key`)."""
    label: int
    """Class index: 0 non-COVID, 1 COVID-19."""
    split: str
    finding: str = ""
    source: str = ""
    split_group: str = ""
    """Images that must stay on one side of any split (one patient, near-duplicates across
    sources); empty: the image is a group of its own (:mod:`training.folds`)."""

    @property
    def finding_group(self) -> str:
        """``covid``, ``no_finding`` or ``other_disease``: the paper's three score histograms."""
        if self.label == 1:
            return "covid"
        if self.finding.strip().lower() in {"no finding", "normal", "no_finding", ""}:
            return "no_finding"
        return "other_disease"


@dataclass(frozen=True)
class Manifest:
    """All rows of a manifest file plus where it came from (for the model card)."""

    path: Path
    sha256: str
    rows: tuple[ManifestRow, ...]

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names present: train, val, test first, then others in manifest order."""
        present = dict.fromkeys(r.split for r in self.rows)
        return tuple(s for s in SPLITS if s in present) + tuple(
            s for s in present if s not in SPLITS
        )

    def split(self, name: str) -> list[ManifestRow]:
        """Rows of one split, in manifest order; a split the manifest lacks is an error that
        lists the ones it has."""
        rows = [r for r in self.rows if r.split == name]
        if not rows:
            raise ValueError(
                f"manifest {self.path.name} has no rows in split {name!r}; its splits: "
                f"{', '.join(self.splits)}"
            )
        return rows

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and label, e.g. ``{"train": {"covid": 355, "non_covid": 577}}``."""
        counter = Counter((r.split, LABELS[r.label]) for r in self.rows)
        return {s: {lab: counter.get((s, lab), 0) for lab in LABELS} for s in self.splits}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (identifies the manifest a model was trained on)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_rows(
    records: Iterable[dict[str, str]], base: Path, manifest_path: Path
) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    for line_no, rec in enumerate(records, start=2):
        label = (rec.get("label") or "").strip()
        split = (rec.get("split") or "").strip()
        rel = (rec.get("path") or "").strip()
        where = f"{manifest_path}:{line_no}"
        if not rel:
            raise ValueError(f"{where}: empty path")
        if label not in LABELS:
            raise ValueError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
        if not SPLIT_NAME.match(split):
            raise ValueError(
                f"{where}: split {split!r} is not a split name (1-64 letters, digits, '.', '_' "
                "or '-', e.g. train, val, test, holdout)"
            )
        rows.append(
            ManifestRow(
                path=(base / rel).resolve(),
                relpath=_report_key(rel, base),
                label=LABELS.index(label),
                split=split,
                finding=(rec.get("finding") or "").strip(),
                source=(rec.get("source") or "").strip(),
                split_group=(rec.get("split_group") or "").strip(),
            )
        )
    return rows


def _report_key(rel: str, base: Path) -> str:
    """The path reports show for an image: as written when relative; an absolute path relative
    to the images' folder when under it, else made portable (:mod:`training.portable`), so that
    no report names a folder of the machine it was made on."""
    path = Path(rel).expanduser()
    if not path.is_absolute():
        return rel
    if path.is_relative_to(base):
        return path.relative_to(base).as_posix()
    return portable_path(path, Anchors(), tail=3)


def read_manifest(path: Path | str, data_root: Path | str | None = None) -> Manifest:
    """Read and validate a manifest; image paths resolve against ``data_root`` or its folder."""
    manifest_path = Path(path).expanduser().resolve()
    if not manifest_path.is_file():
        raise FileNotFoundError(f"manifest {manifest_path} does not exist")
    base = Path(data_root).expanduser().resolve() if data_root else manifest_path.parent
    with manifest_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"manifest {manifest_path} lacks column(s) {', '.join(missing)}; "
                f"required: {', '.join(REQUIRED_COLUMNS)}"
            )
        rows = _parse_rows(reader, base, manifest_path)
    if not rows:
        raise ValueError(f"manifest {manifest_path} has no rows")
    return Manifest(path=manifest_path, sha256=file_sha256(manifest_path), rows=tuple(rows))


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write a manifest CSV (used by tests and by tools that build subsets)."""
    columns: list[str] = list(REQUIRED_COLUMNS)
    for rec in rows:
        columns.extend(k for k in rec if k not in columns)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
