"""Leave-one-source-out manifests: train without one collection, test on it alone.

Within-source AUC removes the source from the *scoring*; a leave-one-source-out run removes it from
the *training*: a model that never saw a collection cannot have learnt its look, so its AUC on
that collection is disease signal (or the lack of it). One manifest per held-out source:

- every image of the held-out source goes to ``test`` (whatever its split was);
- the other sources keep their ``train`` and ``val`` images; their ``test`` images are dropped, so
  the test split is exactly the unseen collection;
- images of other sources that share a ``split_group`` with a held-out image (near-duplicates
  across collections, see DESIGN.md) are dropped too, or they would leak it into training.

Train on the result as usual (``deepcovid train --manifest loso-<source>.csv``); the new card's
``source_prevalence`` then lacks the held-out source, and ``deepcovid compare`` shows each version's
AUC on the sources it never trained on (on this manifest's test split or the original one)::

    python -m training.loso --manifest shared/data/cxr/manifest.csv --out-dir runs/loso
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path

from training.manifest import write_manifest

Record = dict[str, str]


def mixed_sources(records: Sequence[Record]) -> list[str]:
    """Sources that hold both classes anywhere in the manifest (the ones worth holding out)."""
    labels: dict[str, set[str]] = {}
    for rec in records:
        labels.setdefault(rec.get("source", ""), set()).add(rec["label"])
    return sorted(s for s, seen in labels.items() if s and len(seen) == 2)


def leave_one_source_out(records: Sequence[Record], source: str) -> list[Record]:
    """The records of a manifest with ``source`` held out (see the module docstring)."""
    held = [r for r in records if r.get("source", "") == source]
    if not held:
        raise ValueError(f"no images of source {source!r} in the manifest")
    groups = {r["split_group"] for r in held if r.get("split_group")}
    out: list[Record] = []
    for rec in records:
        if rec.get("source", "") == source:
            out.append({**rec, "split": "test"})
        elif rec["split"] == "test" or (rec.get("split_group") and rec["split_group"] in groups):
            continue
        else:
            out.append(dict(rec))
    return out


def write_loso_manifests(
    manifest: Path, out_dir: Path, sources: Sequence[str] | None = None
) -> list[Path]:
    """``out_dir/loso-<source>.csv`` per source (default: every mixed source); returns the paths.

    Image paths are rewritten relative to ``out_dir``, so the new manifests find the same files.
    """
    manifest = Path(manifest).resolve()
    with manifest.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir.resolve()
    moved = [
        {**r, "path": os.path.relpath((manifest.parent / r["path"]).resolve(), base)}
        for r in records
    ]
    written = []
    for source in sources or mixed_sources(records):
        path = out_dir / f"loso-{source}.csv"
        write_manifest(path, leave_one_source_out(moved, source))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.loso``: write the leave-one-source-out manifests."""
    parser = argparse.ArgumentParser(prog="python -m training.loso", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--source", action="append", help="source to hold out (repeatable; default: all mixed)"
    )
    args = parser.parse_args(argv)
    for path in write_loso_manifests(args.manifest, args.out_dir, args.source):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
