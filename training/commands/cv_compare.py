"""``cv-compare``: recipes side by side on their out-of-fold figures, and each against a
reference fold by fold (:mod:`training.cv_compare`); reads ``cv`` folders, never a test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import UsageError

NAME = "cv-compare"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cv-compare``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="compare cross-validated recipes on the same folds (out-of-fold figures only)",
        description="Reads the cv.json of each folder (`cv --out-dir`): every recipe's mean ± sd, "
        "and each recipe minus the reference fold by fold, with the selection rule's bar. "
        "All must use the same folds (manifest, K, fold seed).",
    )
    parser.add_argument("reference", type=Path, help="the reference recipe's `cv` folder")
    parser.add_argument("others", type=Path, nargs="*", metavar="DIR", help="other `cv` folders")
    parser.add_argument(
        "--out", type=Path, default=None, help="write cv-compare.md and cv-compare.json here"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Print the comparison as Markdown (and write it with ``--out``)."""
    from training.cv_compare import NotComparable, compare_runs, markdown, read_run, write

    names = [args.reference, *args.others]
    if len({p.resolve() for p in names}) < len(names):
        raise UsageError("a folder is named twice", "name each `cv` folder once")
    try:
        runs = [read_run(folder) for folder in names]
        result = compare_runs(runs[0], runs[1:])
    except NotComparable as exc:
        raise UsageError(
            str(exc), "cross-validate every recipe with the same --fold-seed and --folds"
        ) from exc
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc), "pass the --out-dir of a `cv` run") from exc
    print(markdown(result), end="")
    if args.out is not None:
        write(args.out, result)
        print(f"comparison written to {args.out}")
    return 0
