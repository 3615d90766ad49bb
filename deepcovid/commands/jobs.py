"""``deepcovid jobs list | show UID | reanalyse UID | resend UID | retry-failed``.

What became of each received instance, and the operator's actions on it -- the same code
(:mod:`store.actions`) as the console's buttons, audited the same way (``via`` ``cli``).
"""

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
    again = sub.add_parser("reanalyse", help="analyse a failed or rejected job again")
    again.add_argument("uid", help="SOP Instance UID (or job id)")
    again.set_defaults(func=cmd_reanalyse)
    resend = sub.add_parser(
        "resend", help="send a finished job's result objects to the destination again"
    )
    resend.add_argument("uid", help="SOP Instance UID (or job id)")
    resend.set_defaults(func=cmd_resend)
    retry = sub.add_parser(
        "retry-failed",
        help="put every result object whose delivery was given up back in the outbox",
    )
    retry.set_defaults(func=cmd_retry_failed)


def _store() -> Any:
    """The existing job store; a one-line error naming the fix where there is none yet."""
    from store.existing import open_existing

    return open_existing(get_settings().storage.db_url)


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


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def _by() -> str:
    """Who asked, as the job's timeline says it."""
    return f"{_os_user()} (cli)"


def _report(action: str, target: str, result: Any, study_instance_uid: str | None = None) -> int:
    """Print and audit an action's outcome; exit 0 when it changed something, else 1."""
    import audit
    from audit.events import UserAction
    from deepcovid.runtime import configure_audit

    configure_audit(get_settings())
    audit.record(
        UserAction(
            user=_os_user(),
            role=None,
            via="cli",
            peer_address=None,
            action=action,
            target=target,
            reason=result.message,
            study_instance_uid=study_instance_uid,
        )
    )
    print(result.message)
    return 0 if result.changed else 1


def _job_or_exit(uid: str) -> Any:
    from store.actions import find_job

    job = find_job(_store(), uid)
    if job is None:
        print(f"no job for {uid}")
    return job


def cmd_reanalyse(args: argparse.Namespace) -> int:
    """Re-analyse a failed or rejected job."""
    from store.actions import reanalyse

    job = _job_or_exit(args.uid)
    if job is None:
        return 1
    result = reanalyse(_store(), job.id, by=_by())
    return _report("reanalyse", job.sop_instance_uid, result, job.study_instance_uid)


def cmd_resend(args: argparse.Namespace) -> int:
    """Resend a job's results (the node's dispatcher sends them)."""
    from store.actions import resend

    job = _job_or_exit(args.uid)
    if job is None:
        return 1
    result = resend(_store(), job.id, by=_by(), destination=get_settings().delivery.destination)
    return _report("resend", job.sop_instance_uid, result, job.study_instance_uid)


def cmd_retry_failed(args: argparse.Namespace) -> int:
    """Retry every failed delivery."""
    from store.actions import retry_failed_deliveries

    result = retry_failed_deliveries(_store(), by=_by())
    _report("retry-failed", "all failed deliveries", result)
    return 0
