"""``deepcovid users add NAME [--role viewer|admin] | list | remove NAME``: console accounts.

The password of ``add`` is read from standard input: typed twice at a terminal (not echoed), or
the first line of a pipe (``printf '%s\\n' "$PASSWORD" | deepcovid users add alice``). Additions
and removals are written to the audit log. The logic is :mod:`store.users`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, Literal

from common.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``users add``, ``users list`` and ``users remove``."""
    from store.users import ROLES, VIEWER

    p = subparsers.add_parser("users", help="accounts of the operator console")
    sub = p.add_subparsers(dest="users_command", metavar="SUBCOMMAND", required=True)
    add = sub.add_parser("add", help="add a user; the password is read from standard input")
    add.add_argument("name")
    add.add_argument(
        "--role",
        choices=ROLES,
        default=VIEWER,
        help="viewer: sees every page; admin: may also run actions and activate models "
        "(default: viewer)",
    )
    add.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="users and their roles")
    ls.set_defaults(func=cmd_list)
    rm = sub.add_parser("remove", help="remove a user (ends their sessions)")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_remove)


def _users() -> Any:
    from store import JobStore
    from store.migrate import upgrade
    from store.users import Users

    settings = get_settings()
    settings.storage.ensure_dirs()
    upgrade(settings.storage.db_url)
    return Users(JobStore(settings.storage.db_url))


def _audit(action: Literal["add", "remove"], name: str, reason: str = "") -> None:
    """An account added or removed, by the OS account that ran the command."""
    import audit
    from audit.events import AccountChanged
    from deepcovid.runtime import configure_audit

    configure_audit(get_settings())
    audit.record(
        AccountChanged(
            user=getpass.getuser(), via="cli", action=action, account=name, reason=reason
        )
    )


def read_password() -> str:
    """Twice at a terminal (must match), else the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_add(args: argparse.Namespace) -> int:
    """Add a user with the password from standard input."""
    from store.users import UserError, check_name

    try:
        check_name(args.name)
        password = read_password()
        user = _users().add(args.name, password, args.role)
    except (UserError, ValueError) as exc:
        print(f"deepcovid users add: {exc}", file=sys.stderr)
        return 1
    _audit("add", user.name, f"role {user.role}")
    print(f"user {user.name} added ({user.role})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the users."""
    users = _users().list_all()
    if not users:
        print("no users (deepcovid users add NAME --role admin)")
        return 0
    print(f"{'NAME':<24} {'ROLE':<7} {'CREATED (UTC)':<20} LAST LOGIN (UTC)")
    for u in users:
        last = f"{u.last_login_at:%Y-%m-%d %H:%M:%S}" if u.last_login_at else "-"
        print(f"{u.name:<24} {u.role:<7} {u.created_at:%Y-%m-%d %H:%M:%S}  {last}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a user; exit 1 if there was none of that name."""
    if not _users().remove(args.name):
        print(f"deepcovid users remove: no user {args.name!r}", file=sys.stderr)
        return 1
    _audit("remove", args.name)
    print(f"user {args.name} removed")
    return 0
