"""``deepcovid studies list | show UID``: studies and their study-level results.

A study is the jobs of one Study Instance UID; once it has been quiet for
``worker.study_settle_s`` the node issues its study-level result (SR + KOS, RIS notifications;
:mod:`worker.study`). ``list`` shows the most recently changed studies with their current
finding, ``show`` one study's results (each naming the SR it replaces) and images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from common.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``studies list`` and ``studies show``."""
    p = subparsers.add_parser("studies", help="inspect studies and their study-level results")
    sub = p.add_subparsers(dest="studies_command", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("list", help="most recently changed studies, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one study: its results and its images")
    show.add_argument("uid", help="Study Instance UID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)


def _studies() -> Any:
    """The studies of the existing job store; a one-line error naming the fix where there is
    none yet."""
    from store.existing import open_existing
    from store.studies import Studies

    return Studies(open_existing(get_settings().storage.db_url))


def cmd_list(args: argparse.Namespace) -> int:
    """Print a table (or JSON lines) of recently changed studies."""
    rows = _studies().summaries(limit=args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(dataclasses.asdict(row), default=str))
        return 0
    header = f"{'LAST CHANGE (UTC)':<19}  {'IMG':>3} {'BUSY':>4}  {'FINDING':<13} {'P':>5} {'#':>2}"
    print(f"{header}  STUDY UID")
    for row in rows:
        latest = row.latest
        finding = latest.finding if latest else ("waiting" if row.waiting else "settling")
        prob = f"{latest.probability:.3f}" if latest and latest.probability is not None else "-"
        number = str(latest.sequence) if latest else "-"
        print(
            f"{row.last_change:%Y-%m-%d %H:%M:%S}  {row.images:>3} {row.waiting or '-':>4}  "
            f"{finding:<13} {prob:>5} {number:>2}  {row.study_instance_uid}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one study's results and images; exit 1 if unknown."""
    studies = _studies()
    jobs = studies.jobs(args.uid)
    if not jobs:
        print(
            f"deepcovid studies show: no study {args.uid}; `deepcovid studies list` shows the "
            "Study Instance UIDs there are",
            file=sys.stderr,
        )
        return 1
    results = studies.results(args.uid)
    if args.json:
        data = {
            "study_instance_uid": args.uid,
            "results": [dataclasses.asdict(r) for r in results],
            "images": [_image(job) for job in jobs],
        }
        print(json.dumps(data, default=str, indent=2))
        return 0
    print(f"study {args.uid}: {len(jobs)} image(s), {len(results)} study result(s)")
    for r in reversed(results):
        prob = f" P={r.probability:.3f}" if r.probability is not None else ""
        state = "queued" if r.queued_at else "building"
        print(f"  #{r.sequence} {r.created_at:%Y-%m-%d %H:%M:%S} {r.finding}{prob} ({state})")
        print(f"      SR  {r.sr_sop_instance_uid or '- (none sent: no image analysed)'}")
        print(f"      KOS {r.kos_sop_instance_uid or '-'}")
        if r.predecessor_sr_sop_instance_uid:
            print(f"      replaces SR {r.predecessor_sr_sop_instance_uid}")
    driver = results[-1].driving_sop_instance_uid if results else None
    print("images:")
    for job in jobs:
        mark = "*" if job.sop_instance_uid == driver else " "
        prob = f"{job.probability:.3f}" if job.probability is not None else "-"
        detail = job.finding or job.reason or ""
        print(
            f" {mark}{job.id:>6}  {job.state:<13} {job.view_position or '-':<5} {prob:>6}  {detail}"
        )
    if driver:
        print("(* the image that drove the study finding)")
    return 0


def _image(job: Any) -> dict[str, Any]:
    keys = ("id", "sop_instance_uid", "state", "modality", "view_position", "finding")
    return {key: getattr(job, key) for key in (*keys, "probability", "reason")}
