"""``evaluate``: score a split with a model version and write the report folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import checks
from training.commands.inputs import add_manifest_arguments, add_registry_argument
from training.commands.scoring import score_version
from training.portable import Anchors, portable_card, portable_path

NAME = "evaluate"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``evaluate``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="evaluate a model version on a split and write a report folder",
        description="metrics.json + report.md + figures: sensitivity/specificity over thresholds "
        "with 95 % CIs, ROC/PR, confusion matrix, score histograms, per-source metrics, "
        "occlusion heatmaps.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``evaluate``."""
    parser.add_argument("--model", default=None, help="version to evaluate (default: active)")
    parser.add_argument(
        "--split",
        default="test",
        help="a split of the manifest: train, val, test or any other it names (default test)",
    )
    add_manifest_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="report folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--bootstrap", type=int, default=2000, help="AUC bootstrap resamples")
    parser.add_argument("--occlusion-images", type=int, default=12, help="heatmaps in the grid")
    checks.add_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--load-workers", type=int, default=4)
    parser.add_argument(
        "--record-in-card",
        action="store_true",
        help="also store the split's metrics (overall and per source) in the version's card",
    )
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score the split, compute the metrics and the shortcut checks, write the report."""
    from training.evaluate import compute_metrics, json_safe
    from training.heatmaps import occlusion_examples
    from training.report import write_predictions, write_report

    found = score_version(args, registry_root, args.model, args.split)
    model, card, data, scored = found.model, found.card, found.data, found.scored
    manifest, device = found.manifest, found.device
    metrics = compute_metrics(scored, card, manifest, args.split, n_boot=args.bootstrap)
    anchors = Anchors(registry=registry_root, manifest_dir=manifest.path.parent)
    metrics["manifest"] = portable_path(manifest.path, anchors, manifest=False)
    shortcuts = checks.run(args, model, card, data, scored, device)
    metrics.update(json_safe({"probes": shortcuts.probes, "localisation": shortcuts.localisation}))
    occ = occlusion_examples(
        model,
        card,
        data,
        scored.probs,
        count=args.occlusion_images,
        window=args.occlusion_window,
        stride=args.occlusion_stride,
        device=device,
        masks=shortcuts.masks,
        cache=shortcuts.maps,
    )
    out = args.out or Path("runs") / "reports" / f"{card.version}-{args.split}"
    files = write_report(out, metrics, portable_card(card, anchors), occ)
    files.append(write_predictions(out, scored, card.threshold))
    if args.record_in_card:
        from training.release import record_metrics

        record_metrics(found.registry, card, scored, args.split, args.bootstrap)
    op = metrics["operating_point"]
    print(
        f"{card.version} on {args.split} ({metrics['n']} images): {checks.auc_text(metrics)}, "
        f"within-source AUC {checks.fmt(metrics['within_source']['pooled_auc'])}, source-only "
        f"baseline AUC {checks.fmt(metrics['source_only_auc'])}, "
        f"at threshold {card.threshold:.4f}: {checks.rates_text(op)}; report {out} "
        f"({len(files)} files)"
    )
    return 0
