"""``deepcovid tokens add NAME | list | remove NAME``: bearer tokens of DICOMweb senders.

``add`` prints the new token once (only its hash is stored: a lost token is removed and made
again). A STOW-RS request to ``/dicom-web/studies`` must carry ``Authorization: Bearer <token>``.
Additions and removals are written to the audit log. The logic is :mod:`store.tokens`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deepcovid.commands.users import _audit, _users


def register(subparsers: Any) -> None:
    """Add ``tokens add``, ``tokens list`` and ``tokens remove``."""
    p = subparsers.add_parser("tokens", help="bearer tokens of DICOMweb (STOW-RS) senders")
    sub = p.add_subparsers(dest="tokens_command", metavar="SUBCOMMAND", required=True)
    add = sub.add_parser("add", help="make a token for a sender; printed once")
    add.add_argument("name", help="the sender (recorded with what it sends)")
    add.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="tokens by name (never the tokens themselves)")
    ls.set_defaults(func=cmd_list)
    rm = sub.add_parser("remove", help="revoke a sender's token")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_remove)


def _tokens() -> Any:
    from store.tokens import Tokens

    return Tokens(_users().store)


def cmd_add(args: argparse.Namespace) -> int:
    """Make and print a token."""
    from store.users import UserError

    try:
        token = _tokens().add(args.name)
    except UserError as exc:
        print(f"deepcovid tokens add: {exc}", file=sys.stderr)
        return 1
    _audit("add", f"token:{args.name}", "DICOMweb sender token")
    print(token)
    print(
        f"token for {args.name}: shown once, keep it secret (send it as "
        "'Authorization: Bearer <token>')",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the tokens' names and use."""
    tokens = _tokens().list_all()
    if not tokens:
        print("no tokens (deepcovid tokens add NAME)")
        return 0
    print(f"{'NAME':<24} {'CREATED (UTC)':<20} LAST USED (UTC)")
    for t in tokens:
        last = f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "-"
        print(f"{t.name:<24} {t.created_at:%Y-%m-%d %H:%M:%S}  {last}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Revoke a token; exit 1 if there was none of that name."""
    if not _tokens().remove(args.name):
        print(f"deepcovid tokens remove: no token {args.name!r}", file=sys.stderr)
        return 1
    _audit("remove", f"token:{args.name}")
    print(f"token {args.name} removed")
    return 0
