"""`deepcovid models list | show | activate | fit-domain | ensemble`: the model registry from the
shell."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from common.errors import UsageError, UserError


def register(subparsers: Any) -> None:
    """Add ``models`` and its sub-commands."""
    parser = subparsers.add_parser(
        "models", help="list, show and activate model versions of the registry"
    )
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="registry folder (default: the model_registry_dir setting)",
    )
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    p_list = sub.add_parser("list", help="versions, the active one marked with *")
    p_list.set_defaults(func=_list)

    p_show = sub.add_parser("show", help="print a version's model card (JSON)")
    p_show.add_argument("version", nargs="?", default=None, help="default: the active version")
    p_show.add_argument(
        "--verify", action="store_true", help="also check the weights' sha256 against the card"
    )
    p_show.set_defaults(func=_show)

    p_act = sub.add_parser("activate", help="make VERSION the active model")
    p_act.add_argument("version")
    p_act.set_defaults(func=_activate)

    from training.commands import fit_domain

    fit_domain.register(sub, registry=False).set_defaults(func=_fit_domain)

    p_ens = sub.add_parser(
        "ensemble",
        help="save a new version NEW that is the ensemble of existing versions (mean probability)",
    )
    p_ens.add_argument("new", metavar="NEW", help="name of the new version")
    p_ens.add_argument(
        "--members", nargs="+", required=True, metavar="VERSION", help="the member versions"
    )
    p_ens.add_argument(
        "--origins",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="what each member was, e.g. 'fold 1' ... (default: from each card's fold and seed)",
    )
    p_ens.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the ensemble's operating threshold (default: the mean of the members')",
    )
    p_ens.add_argument(
        "--threshold-method", default="", help="how that threshold was chosen (for the card)"
    )
    p_ens.add_argument("--activate", action="store_true", help="make NEW the active version")
    p_ens.set_defaults(func=_ensemble)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _registry(args: argparse.Namespace) -> Any:
    from common.settings import get_settings
    from models.registry import Registry

    root = args.registry if args.registry is not None else get_settings().model.registry_dir
    if not Path(root).is_dir():
        where = "--registry" if args.registry is not None else "DEEPCOVID_MODEL_REGISTRY_DIR"
        raise UsageError(f"model registry {root} is not a folder", f"correct {where}")
    return Registry(root)


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    versions = registry.versions()
    if not versions:
        print(f"no model versions in {registry.root}")
        return 0
    active = registry.active_version()
    for version in versions:
        try:
            card = registry.card(version)
            summary = _summary(card)
        except Exception as exc:  # one broken version must not hide the others
            summary = f"(unreadable card: {exc})"
        print(f"{'*' if version == active else ' '} {version}  {summary}")
    return 0


def _summary(card: Any) -> str:
    auc = card.metrics.get("test/auc")
    auc_text = ""
    if auc is not None:
        auc_text = f"  test AUC {auc.value:.3f}"
        if auc.ci_low is not None:
            auc_text += f" ({auc.ci_level:.0%} CI {auc.ci_low:.3f}-{auc.ci_high:.3f})"
    return (
        f"{card.architecture:<14} threshold {card.threshold:.3f}  created {card.created}{auc_text}"
    )


def _registry_errors(exc: Exception) -> UserError:
    """A registry error as the CLI prints it: an unknown or invalid version is a usage error
    (exit 2), weights that do not match their card a problem of the files (exit 1)."""
    from models.registry import WeightsIntegrityError

    if isinstance(exc, WeightsIntegrityError):
        return UserError(str(exc), "copy the version's files again, or activate another")
    return UsageError(str(exc), "`deepcovid models list` shows the versions there are")


def _show(args: argparse.Namespace) -> int:
    from models.registry import RegistryError

    registry = _registry(args)
    try:
        card = registry.card(args.version)
        if args.verify:
            registry.verify(card.version)
    except (RegistryError, ValueError) as exc:
        raise _registry_errors(exc) from exc
    sys.stdout.write(card.to_json())
    return 0


def _fit_domain(args: argparse.Namespace) -> int:
    from training.commands import fit_domain

    return fit_domain.run(args, _registry(args).root, "deepcovid models")


def _ensemble(args: argparse.Namespace) -> int:
    from models.registry import RegistryError
    from training.ensemble import build_ensemble

    registry = _registry(args)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold {args.threshold} is not in [0, 1]", "give a probability")
    try:
        version = build_ensemble(
            registry,
            args.new,
            args.members,
            origins=args.origins,
            threshold=args.threshold,
            threshold_method=args.threshold_method,
            command=shlex.join(
                ["deepcovid", "models", "ensemble", args.new, "--members", *args.members]
            ),
        )
        if args.activate:
            registry.activate(version)
    except (RegistryError, ValueError) as exc:
        raise _registry_errors(exc) from exc
    card = registry.card(version)
    print(
        f"{version}: ensemble of {len(card.members)} {card.architecture} networks "
        f"({', '.join(m.version for m in card.members)}), threshold {card.threshold:.4f}"
        + (" - active" if args.activate else "")
    )
    return 0


def _activate(args: argparse.Namespace) -> int:
    from models.registry import RegistryError

    registry = _registry(args)
    try:
        registry.activate(args.version)
    except (RegistryError, ValueError) as exc:
        raise _registry_errors(exc) from exc
    print(f"active model version: {args.version} ({registry.root})")
    return 0
