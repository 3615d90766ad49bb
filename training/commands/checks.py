"""The shortcut checks ``evaluate`` and ``compare`` share: their flags and one timed run.

The checks themselves (probes with the lungs hidden or shown alone, the evidence inside the lung
fields) are :func:`training.shortcuts.shortcut_checks`; see docs/training.md. Also the numbers of
their one-line summaries (:func:`fmt`, :func:`auc_text`, :func:`rates_text`), which say "not
defined" where a split of one class has no AUC or no rate.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Any

from training.commands.inputs import log

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.card import ModelCard
    from training.dataset import SplitData
    from training.evaluate import Scored
    from training.shortcuts import ShortcutChecks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the shortcut checks (probes, heatmap localisation)."""
    parser.add_argument("--occlusion-window", type=int, default=32)
    parser.add_argument("--occlusion-stride", type=int, default=8)
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the shortcut probes (every image scored again with the lungs hidden and "
        "with only the lungs shown)",
    )
    parser.add_argument(
        "--localisation-sample",
        type=int,
        default=40,
        metavar="N",
        help="images (stratified by class and source) whose occlusion map is computed to "
        "measure the evidence inside the lung fields; 0 skips it (default 40)",
    )
    parser.add_argument(
        "--localisation-seed", type=int, default=0, help="seed of the localisation sample"
    )


def run(
    args: argparse.Namespace,
    model: nn.Module,
    card: ModelCard,
    data: SplitData,
    scored: Scored,
    device: torch.device,
) -> ShortcutChecks:
    """The probes and the localisation sample as the flags ask, timed in the log."""
    from training.shortcuts import shortcut_checks

    t0 = time.perf_counter()
    checks = shortcut_checks(
        model,
        card,
        data,
        scored,
        device,
        probes=not args.no_probes,
        localisation_sample=args.localisation_sample,
        localisation_seed=args.localisation_seed,
        window=args.occlusion_window,
        stride=args.occlusion_stride,
        log=log,
    )
    log(f"{card.version}: shortcut probes and localisation in {time.perf_counter() - t0:.1f} s")
    return checks


def fmt(value: float | None) -> str:
    """A metric for a one-line summary: 4 decimals, ``n/a`` for JSON's null."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def auc_text(metrics: dict[str, Any]) -> str:
    """``AUC 0.8123 (95 % CI 0.7-0.9)``, or that it is not defined: one class only."""
    auc, ci = metrics.get("auc"), metrics.get("auc_ci_bootstrap") or [None, None]
    if auc is None or not math.isfinite(auc):
        from training.metrics import NOT_DEFINED_ONE_CLASS

        return f"AUC {NOT_DEFINED_ONE_CLASS}"
    return f"AUC {auc:.4f} (95 % CI {fmt(ci[0])}-{fmt(ci[1])})"


def rates_text(point: dict[str, Any]) -> str:
    """Sensitivity and specificity at a threshold, each only where its class is present."""
    rates = [
        f"{name} {fmt(point.get(name))}"
        for name in ("sensitivity", "specificity")
        if point.get(name) is not None and math.isfinite(point[name])
    ]
    return ", ".join(rates) or "no rate defined"
