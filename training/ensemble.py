"""Build an ensemble version from versions already in the registry (fold models, seeds).

The members' weights files are copied byte for byte into the new version (each keeps the sha256
its own card names), so the ensemble does not depend on its source versions staying in the
registry. All members must share one architecture and one preprocessing: an ensemble is one
model that sees one input. Their domain checks come along (all members have one, or none has).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from common.paths import WEIGHTS_FILE
from models.card import EnsembleMember, ModelCard
from models.registry import Registry, RegistryError, check_version_name

SHARED_FIELDS: tuple[str, ...] = ("architecture", "input_size", "mean", "std", "classes")
"""Card fields every member must have in common (besides the preprocessing steps)."""


class EnsembleError(ValueError):
    """The versions cannot form one ensemble (the reason says which differ and how)."""


_CV_VERSION = re.compile(r"-f(\d+)-s\d+$")
"""How ``cv --keep-models`` names a fold model's version (``<prefix>-f<fold>-s<seed>``)."""


def member_origin(card: ModelCard) -> str:
    """What a member was: ``fold 2, seed 0``, ``seed 1``, or "" when nothing says.

    The fold comes from the card's ``training_parameters["fold"]``, else from the version name a
    kept cross-validation fold model has (``...-f2-s0``); the seed from ``training_parameters``.
    """
    params = card.training_parameters
    fold = params.get("fold")
    if fold is None and (match := _CV_VERSION.search(card.version)):
        fold = int(match.group(1))
    parts = [f"fold {fold}"] if fold is not None else []
    if params.get("seed") is not None:
        parts.append(f"seed {params['seed']}")
    return ", ".join(parts)


def _shared(cards: Sequence[ModelCard]) -> None:
    """Refuse members that differ in architecture, input or preprocessing."""
    first = cards[0]
    for name in (*SHARED_FIELDS, "preprocess"):
        values = {card.version: getattr(card, name) for card in cards}
        if any(value != getattr(first, name) for value in values.values()):
            listed = "; ".join(f"{version}: {value}" for version, value in values.items())
            raise EnsembleError(
                f"the members differ in {name} ({listed}): an ensemble's members share one "
                "architecture and one preprocessing"
            )


def _common(cards: Sequence[ModelCard], name: str) -> Any:
    """The members' value of card field ``name`` when they all have the same, else None."""
    values = [getattr(card, name) for card in cards]
    return values[0] if all(v == values[0] for v in values) else None


def ensemble_card(
    cards: Sequence[ModelCard],
    *,
    version: str = "",
    origins: Sequence[str] | None = None,
    threshold: float | None = None,
    threshold_method: str = "",
    command: str = "",
    notes: str = "",
) -> ModelCard:
    """The card of the ensemble of the saved versions ``cards`` (in this order).

    ``origins`` say what each member was (default: :func:`member_origin`). ``threshold``
    (default: the mean of the members' thresholds, so stated in ``threshold_method``) is the
    ensemble's operating threshold; set it from the ensemble's own out-of-fold predictions or
    with ``deepcovid threshold`` where those exist.
    """
    if len(cards) < 2:
        raise EnsembleError("an ensemble needs at least two member versions")
    names = [card.version for card in cards]
    if len(set(names)) != len(names):
        raise EnsembleError(f"a version is named twice among the members: {', '.join(names)}")
    nested = [card.version for card in cards if card.is_ensemble]
    if nested:
        raise EnsembleError(f"{', '.join(nested)} is itself an ensemble: name its members instead")
    if origins is not None and len(origins) != len(cards):
        raise EnsembleError(f"{len(origins)} origins given for {len(cards)} members")
    _shared(cards)
    checked = [card.version for card in cards if card.domain_check is not None]
    if checked and len(checked) != len(cards):
        unchecked = [card.version for card in cards if card.domain_check is None]
        raise EnsembleError(
            f"{', '.join(checked)} have a domain check and {', '.join(unchecked)} have none: "
            "fit it for those (`deepcovid models fit-domain VERSION`) so every member has one"
        )
    width = max(2, len(str(len(cards))))
    members = tuple(
        EnsembleMember(
            file=f"member-{i:0{width}d}.pt",
            sha256=card.weights_sha256,
            origin=(origins[i - 1] if origins is not None else member_origin(card)),
            version=card.version,
            weights_dtype=card.weights_dtype,
            domain_check=card.domain_check,
        )
        for i, card in enumerate(cards, start=1)
    )
    if threshold is None:
        threshold = sum(card.threshold for card in cards) / len(cards)
        threshold_method = threshold_method or (
            f"mean of the {len(cards)} members' thresholds (not tuned on the ensemble)"
        )
    first = cards[0]
    return ModelCard(
        architecture=first.architecture,
        name=first.name,
        version=version,
        input_size=first.input_size,
        mean=first.mean,
        std=first.std,
        classes=first.classes,
        preprocessing=dict(first.preprocessing),
        threshold=float(threshold),
        threshold_method=threshold_method or "given when the ensemble was built",
        init=f"ensemble of {', '.join(names)}",
        training_manifest=_common(cards, "training_manifest") or "",
        training_manifest_sha256=_common(cards, "training_manifest_sha256") or "",
        training_command=command,
        source_prevalence=_common(cards, "source_prevalence") or {},
        intended_use=first.intended_use,
        notes=notes
        or f"Ensemble of {len(cards)} {first.architecture} networks: the mean of their "
        "COVID-19 probabilities.",
        members=members,
    )


def build_ensemble(
    registry: Registry,
    version: str,
    member_versions: Sequence[str],
    **card_options: Any,
) -> str:
    """Save the ensemble of ``member_versions`` as the new ``version``; returns its name.

    Every member is verified (weights and domain check against its card) before anything is
    written; ``card_options`` go to :func:`ensemble_card`. The new version is not activated.
    """
    check_version_name(version)
    if version in registry.versions():
        raise RegistryError(f"model version {version!r} already exists in {registry.root}")
    cards = [registry.verify(name) for name in member_versions]
    card = ensemble_card(cards, version=version, **card_options)
    member_files = {
        member.file: registry.path(member.version) / WEIGHTS_FILE for member in card.members
    }
    extra: dict[str, bytes] = {}
    for member in card.members:
        if member.domain_check is not None:
            path = registry.path(member.version) / member.domain_check.file
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != member.domain_check.sha256:
                raise RegistryError(f"{path} changed while the ensemble was being built")
            extra[member.domain_check.file] = data
    return registry.save_ensemble(card, member_files, extra)
