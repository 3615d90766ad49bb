"""``deepcovid db upgrade | current``: the job store's schema."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``db upgrade`` and ``db current``."""
    p = subparsers.add_parser("db", help="job-store schema (Alembic migrations)")
    sub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    up = sub.add_parser("upgrade", help="apply migrations up to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_upgrade)
    cur = sub.add_parser("current", help="print the revision the database is at")
    cur.set_defaults(func=cmd_current)


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Apply migrations."""
    from store.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    print(f"job store at revision {upgrade(settings.db_url, args.revision)}")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    """Print the current revision (and the head when the store is behind); exit 1 unless the
    store is at the head."""
    from store.existing import open_existing, schema_status

    url = get_settings().db_url
    status = schema_status(url)
    if status.state in {"missing", "unreachable"}:
        open_existing(url)  # raises the one-line error with its fix
    print(status.revision or "(empty database)")
    if not status.ok:
        print(f"deepcovid db current: {status.detail}; run `deepcovid db upgrade`", file=sys.stderr)
        return 1
    return 0
