"""`deepcovid send FILE|DIR ... --to AE@host:port`: our own C-STORE sender, storescu-like.

Argument parsing and printing only; the sending (associations, retries) is
:mod:`dicom_client.scu`. Directories are searched recursively for DICOM files (files with the
``DICM`` prefix, :mod:`dicom_client.files`); files named explicitly are always sent. Exit status:
0 when everything was stored, 1 when anything failed, 2 when there is nothing to send.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_client.files import collect_files, is_dicom_file

__all__ = ["collect_files", "is_dicom_file", "register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``send`` command."""
    parser = subparsers.add_parser(
        "send",
        help="send DICOM files to a DICOM node (C-STORE)",
        description="Send DICOM files, or every DICOM file under directories, to a DICOM "
        "node with C-STORE, retrying transient failures. Exits non-zero if any file failed.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="FILE|DIR",
        type=Path,
        help="DICOM files, or directories searched recursively",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="AE@HOST:PORT",
        dest="destination",
        help="destination, e.g. ORTHANC@pacs:4242",
    )
    parser.add_argument(
        "--calling-ae",
        default=None,
        metavar="AE",
        help="our (calling) AE title; default: the `ae_title` setting",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        metavar="N",
        help="attempts per file before giving up (default: 3)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before the first retry; doubles each time (default: 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="network and DIMSE timeout (default: 60)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="use DICOM TLS with the node's tls_cert/tls_key/tls_ca settings "
        "(verifies the destination's certificate and host name)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Send the files; print failures and a summary."""
    from dicom_client.scu import Destination, Sender

    try:
        destination = Destination.parse(args.destination)
    except ValueError as exc:
        print(f"deepcovid send: {exc}", file=sys.stderr)
        return 2
    if args.attempts < 1:
        print("deepcovid send: --attempts must be at least 1", file=sys.stderr)
        return 2
    files = list(collect_files(args.paths))
    if not files:
        print("deepcovid send: no DICOM files found", file=sys.stderr)
        return 2
    calling_ae = args.calling_ae or _default_ae_title()
    tls = None
    if args.tls:
        from common.settings import get_settings

        tls = get_settings().tls.client_context()
    sender = Sender(
        destination,
        calling_ae=calling_ae,
        max_attempts=args.attempts,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        tls=tls,
    )

    from tqdm import tqdm

    with tqdm(
        total=len(files),
        unit="file",
        desc=f"to {destination}",
        disable=args.no_progress or len(files) < 2,
        file=sys.stderr,
    ) as bar:

        def on_result(result: Any) -> None:
            bar.update(1)
            if not result.ok:
                bar.write(f"FAILED {result.item}: {result.error}", file=sys.stderr)

        report = sender.send_files(files, on_result=on_result)
    failed = len(report.failed)
    print(
        f"sent {len(files) - failed} of {len(files)} file(s) to {destination}"
        + (f"; {failed} failed" if failed else "")
    )
    if failed == len(files) and all(r.status is None for r in report.failed):
        print(
            f"deepcovid send: {destination} never answered; check the AE title, host and port, "
            f"and that the node runs (`echoscu -aec {destination.ae_title} "
            f"{destination.host} {destination.port}`)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _default_ae_title() -> str:
    from common.settings import get_settings

    return get_settings().listener.ae_title
