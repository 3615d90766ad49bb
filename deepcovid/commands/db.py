"""``deepcovid db upgrade | current | purge | backup | restore``: the job store's schema, data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``db upgrade``, ``current``, ``purge``, ``backup`` and ``restore``."""
    p = subparsers.add_parser("db", help="job store: schema, retention, backup and restore")
    sub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    up = sub.add_parser("upgrade", help="apply migrations up to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_upgrade)
    cur = sub.add_parser("current", help="print the revision the database is at")
    cur.set_defaults(func=cmd_current)
    purge = sub.add_parser(
        "purge",
        help="remove the files of jobs finished more than retention_days ago (rows are kept)",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    purge.add_argument(
        "--days", type=float, default=None, help="retention in days (default: retention_days)"
    )
    purge.set_defaults(func=cmd_purge)
    bak = sub.add_parser("backup", help="write a consistent copy of the job store to FILE")
    bak.add_argument("file", type=Path, metavar="FILE")
    bak.set_defaults(func=cmd_backup)
    res = sub.add_parser(
        "restore", help="replace the job store with the backup FILE (services stopped)"
    )
    res.add_argument("file", type=Path, metavar="FILE")
    res.set_defaults(func=cmd_restore)


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Apply migrations."""
    from store.migrate import upgrade

    settings = get_settings()
    settings.storage.ensure_dirs()
    print(f"job store at revision {upgrade(settings.storage.db_url, args.revision)}")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    """Print the current revision (and the head when the store is behind); exit 1 unless the
    store is at the head."""
    from store.existing import open_existing, schema_status

    url = get_settings().storage.db_url
    status = schema_status(url)
    if status.state in {"missing", "unreachable"}:
        open_existing(url)  # raises the one-line error with its fix
    print(status.revision or "(empty database)")
    if not status.ok:
        print(f"deepcovid db current: {status.detail}; run `deepcovid db upgrade`", file=sys.stderr)
        return 1
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Purge (or count) the files past retention."""
    import getpass

    import audit
    from audit.events import UserAction
    from deepcovid.runtime import audit_purged, configure_audit
    from store.existing import open_existing
    from store.lifecycle import purge_expired

    settings = get_settings()
    days = settings.storage.retention_days if args.days is None else args.days
    if days <= 0:
        print("retention is off (retention_days = 0): nothing to purge; or pass --days N")
        return 0
    configure_audit(settings)
    report = purge_expired(
        # never creates a store: one line when there is none
        open_existing(settings.storage.db_url),
        retention_days=days,
        spool_dir=settings.storage.spool,
        results_dir=settings.storage.results,
        dry_run=args.dry_run,
        on_purged=audit_purged,
    )
    if not args.dry_run:
        audit.record(
            UserAction(
                user=getpass.getuser(), role=None, via="cli", peer_address=None, action="purge",
                target=f"files older than {days:g} days", reason=str(report),
            )
        )  # fmt: skip
    print(f"retention {days:g} days: {report}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Back the job store up to FILE."""
    from store.backup import BackupError, backup

    try:
        path = backup(get_settings().storage.db_url, args.file)
    except BackupError as exc:
        print(f"deepcovid db backup: {exc}", file=sys.stderr)
        return 1
    print(f"job store backed up to {path}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore the job store from FILE, refusing while ``serve`` runs on this data folder."""
    from common.pidlock import SERVE_LOCK, PidLock
    from store.backup import BackupError, restore
    from store.migrate import current

    settings = get_settings()
    running = PidLock(settings.storage.data_dir / SERVE_LOCK).holder()
    if running is not None:
        print(
            f"deepcovid db restore: deepcovid serve (process {running}) is running on "
            f"{settings.storage.data_dir}; stop it first",
            file=sys.stderr,
        )
        return 1
    try:
        restore(settings.storage.db_url, args.file)
    except BackupError as exc:
        print(f"deepcovid db restore: {exc}", file=sys.stderr)
        return 1
    print(
        f"job store restored from {args.file} (revision {current(settings.storage.db_url)}); "
        "services apply newer migrations when they start"
    )
    return 0
