"""``deepcovid doctor``: check what a site needs before going live; print one line per check.

The checks are :mod:`deepcovid.doctor`; this module prints them and sets the exit status (1 when
any check fails, warnings allowed).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(subparsers: Any) -> None:
    """Add the ``doctor`` command."""
    parser = subparsers.add_parser(
        "doctor",
        help="check ports, job store, broker, model, spool, TLS, destination and dcmtk",
        description="Check what the node needs before going live and say what is wrong and "
        "how to fix it. Changes nothing. Exit status 1 when any check fails.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks with the effective settings and print them."""
    from common.settings import get_settings
    from deepcovid.doctor import run_checks

    findings = run_checks(get_settings())
    for f in findings:
        if args.json:
            print(json.dumps({"check": f.name, "level": f.level, "detail": f.detail, "fix": f.fix}))
            continue
        print(f"{MARKS[f.level]}  {f.name:<15} {f.detail}")
        if f.fix:
            print(f"{'':<6} {'':<15} fix: {f.fix}")
    failed = [f.name for f in findings if f.failed]
    if not args.json:
        warned = sum(f.level == "warn" for f in findings)
        if failed:
            print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}")
        else:
            print(f"\nready to go live ({warned} warning(s))" if warned else "\nready to go live")
    return 1 if failed else 0
