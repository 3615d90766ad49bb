"""``deepcovid jobs list | show UID``: what became of each received instance."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from common.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``jobs list`` and ``jobs show``."""
    p = subparsers.add_parser("jobs", help="inspect jobs (one per received SOP Instance)")
    sub = p.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("list", help="most recent jobs, newest first")
    ls.add_argument("--state", help="only jobs in this state")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one job and its timeline")
    show.add_argument("uid", help="SOP Instance UID (or job id)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)


def _store() -> Any:
    """The existing job store; a one-line error naming the fix where there is none yet."""
    from store.existing import open_existing

    return open_existing(get_settings().db_url)


def cmd_list(args: argparse.Namespace) -> int:
    """Print a table (or JSON lines) of recent jobs."""
    jobs = _store().list(state=args.state, limit=args.limit)
    if args.json:
        for job in jobs:
            print(json.dumps(_as_dict(job), default=str))
        return 0
    print(f"{'ID':>6}  {'STATE':<13} {'MOD':<4} {'VIEW':<5} {'P(COVID)':>8}  SOP INSTANCE UID")
    for job in jobs:
        prob = f"{job.probability:.3f}" if job.probability is not None else "-"
        print(
            f"{job.id:>6}  {job.state:<13} {job.modality or '-':<4} {job.view_position or '-':<5} "
            f"{prob:>8}  {job.sop_instance_uid}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one job with its timeline; exit 1 if unknown."""
    store = _store()
    job = store.get_by_uid(args.uid)
    if job is None and args.uid.isdigit():
        job = store.get(int(args.uid))
    if job is None:
        print(
            f"deepcovid jobs show: no job for {args.uid}; `deepcovid jobs list` shows the "
            "SOP Instance UIDs and job ids there are",
            file=sys.stderr,
        )
        return 1
    events = store.events(job.id)
    if args.json:
        data = _as_dict(job)
        data["events"] = [{"at": str(e.at), "state": e.state, "message": e.message} for e in events]
        print(json.dumps(data, default=str, indent=2))
        return 0
    for key, value in _as_dict(job).items():
        print(f"{key:>27}: {value if value is not None else '-'}")
    print("timeline:")
    for e in events:
        print(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.state:<13} {e.message or ''}")
    return 0


def _as_dict(job: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(job)
