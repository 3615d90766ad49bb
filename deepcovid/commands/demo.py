"""``deepcovid demo``: start the service, send sample chest X-rays, show the results, stop.

Argument parsing only; the orchestration is :mod:`deepcovid.demo`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    from deepcovid.demo import SAMPLE_DICOM_DIR

    parser = subparsers.add_parser(
        "demo",
        help="start the service, send sample chest X-rays, print each result, stop",
        description="Start the service on its embedded defaults (temporary data folder, free "
        "ports on 127.0.0.1, results kept locally), send sample chest DICOM files with our "
        "sender, wait for their results and print, per instance, the finding, the probability "
        "and where the SR (with an HTML rendering when dcmtk is installed), the heatmap "
        "overlay (with a PNG) and the Parametric Map are; then stop the service.",
    )
    parser.add_argument(
        "--dicom-dir",
        type=Path,
        default=None,
        help=f"folder of chest CR/DX DICOM files (default: {SAMPLE_DICOM_DIR} when present)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the service's data folder (default: a new temporary folder, kept afterwards)",
    )
    parser.add_argument("--port", type=int, default=None, help="DICOM port (default: a free one)")
    parser.add_argument(
        "--monitoring-port", type=int, default=None, help="health/metrics port (default: free)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the service running after the results, until Ctrl-C",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="longest wait for all results (default: 900)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`deepcovid.demo`)."""
    from common.errors import UsageError
    from deepcovid.demo import DemoOptions, run_demo

    for name in ("port", "monitoring_port"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 65536:
            raise UsageError(f"--{name.replace('_', '-')} {value} is not 1-65535", "omit it")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout} is not positive", "give seconds, e.g. 900")
    options = DemoOptions(
        dicom_dir=args.dicom_dir,
        data_dir=args.data_dir,
        port=args.port,
        monitoring_port=args.monitoring_port,
        keep_running=args.keep_running,
        timeout_s=args.timeout,
    )
    return run_demo(options, lambda line: print(line, flush=True))
