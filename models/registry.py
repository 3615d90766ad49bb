"""A folder of model versions with one active version.

Layout::

    root/
      ACTIVE                  # text file: the name of the active version
      v0001/
        weights.pt            # state_dict only (torch.save), read with weights_only=True
        model_card.json       # models.card.ModelCard, with the sha256 of weights.pt
        domain-<sha>.npz      # optional: domain check statistics (models.ood), sha in card
      v0002/                  # an ensemble (models.ensemble): no weights.pt, instead
        member-01.pt ...      # each member's state dict, its sha256 in the card's members
        model_card.json
        domain-<sha>.npz ...  # the members' domain checks, if they have them

Versions are written to a hidden temporary folder and renamed into place, so a reader never sees
half a version; ``ACTIVE`` is replaced atomically too. Loading checks the weights' sha256 against
the card before unpickling anything, so a corrupted or swapped file fails with a clear error.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_file, fsync_dir
from common.paths import ACTIVE_FILE, CARD_FILE, WEIGHTS_FILE
from models.architectures import build_model
from models.card import ModelCard, new_device_uid, utc_now_iso
from models.ensemble import Ensemble
from models.files import MODEL_FILE_MODE, WEIGHTS_DTYPES, sha256_file, write_model_file
from models.ood import DomainCheck, DomainCheckError, EnsembleDomainCheck, load_domain_check

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AUTO_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """The registry or one of its versions cannot be used (reason in the text)."""


class WeightsIntegrityError(RegistryError):
    """A version's weights file is missing, corrupted, or does not match its model card."""


def check_version_name(version: str) -> str:
    """Validate a version name (it becomes a folder name and a DICOM SoftwareVersions value)."""
    if not _VERSION_RE.match(version) or version in {".", ".."}:
        raise ValueError(
            f"invalid version name {version!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return version


class Registry:
    """Model versions under ``root`` (created on the first save)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # --- listing -------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Names of the complete versions (with a card), oldest first by name."""
        if not self.root.is_dir():
            return []
        names = [
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()
        ]
        return sorted(names, key=_version_sort_key)

    def path(self, version: str) -> Path:
        """Folder of ``version``; raises :class:`RegistryError` if it does not exist."""
        check_version_name(version)
        folder = self.root / version
        if not (folder / CARD_FILE).is_file():
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no model version {version!r} in {self.root} (versions: {known})")
        return folder

    def card(self, version: str | None = None) -> ModelCard:
        """The model card of ``version`` (default: the active one), without loading weights."""
        folder = self.path(self._resolve(version))
        try:
            return ModelCard.load(folder / CARD_FILE)
        except (ValueError, TypeError, KeyError) as exc:
            raise RegistryError(f"model card of {folder.name} is invalid: {exc}") from exc

    # --- the active version --------------------------------------------------------------
    def active_version(self) -> str | None:
        """Name in ``ACTIVE``, or None when no version has been activated."""
        active = self.root / ACTIVE_FILE
        if not active.is_file():
            return None
        name = active.read_text(encoding="utf-8").strip()
        return name or None

    def activate(self, version: str) -> None:
        """Make ``version`` the active one (checks that it exists and its weights are intact)."""
        folder = self.path(version)
        self.verify(version)
        write_model_file(self.root / ACTIVE_FILE, f"{folder.name}\n".encode())

    def replace_card(self, card: ModelCard) -> None:
        """Replace the card of the existing version ``card.version`` (atomically).

        For a change that adds a file the card names (a domain check): write the file first,
        then the card, so a reader never sees a card naming a file that is not there.
        """
        write_model_file(self.path(card.version) / CARD_FILE, card.to_json().encode("utf-8"))

    def _resolve(self, version: str | None) -> str:
        if version is not None:
            return version
        active = self.active_version()
        if active is None:
            raise RegistryError(
                f"no active model version in {self.root}: run `deepcovid models activate VERSION` "
                f"(versions: {', '.join(self.versions()) or 'none'})"
            )
        return active

    # --- loading ---------------------------------------------------------------------------
    def verify(self, version: str) -> ModelCard:
        """Check ``version``'s weights file (and domain-check file, if any) against the sha256
        in its card; return the card."""
        card = self.card(version)
        if card.is_ensemble:
            return self._verify_ensemble(version, card)
        weights = self.path(version) / WEIGHTS_FILE
        if not weights.is_file():
            raise WeightsIntegrityError(f"model version {version}: {weights} is missing")
        if not card.weights_sha256:
            raise WeightsIntegrityError(
                f"model version {version}: the card has no weights_sha256 to check {weights} "
                "against"
            )
        actual = sha256_file(weights)
        if actual != card.weights_sha256:
            raise WeightsIntegrityError(
                f"model version {version}: {weights} is corrupted or does not belong to this card "
                f"(sha256 {actual}, card says {card.weights_sha256})"
            )
        if card.domain_check is not None:
            try:
                load_domain_check(self.path(version), card.domain_check)
            except DomainCheckError as exc:
                raise WeightsIntegrityError(f"model version {version}: {exc}") from exc
        return card

    def _verify_ensemble(self, version: str, card: ModelCard) -> ModelCard:
        """Each member's weights (and domain check) against the sha256 in the card's entry."""
        folder = self.path(version)
        for member in card.members:
            weights = folder / member.file
            if not weights.is_file():
                raise WeightsIntegrityError(
                    f"model version {version}: member {member.origin or member.file}: "
                    f"{weights} is missing"
                )
            actual = sha256_file(weights)
            if actual != member.sha256:
                raise WeightsIntegrityError(
                    f"model version {version}: member {member.origin or member.file}: {weights} "
                    f"is corrupted or does not belong to this card (sha256 {actual}, card says "
                    f"{member.sha256})"
                )
            if member.domain_check is not None:
                try:
                    load_domain_check(folder, member.domain_check)
                except DomainCheckError as exc:
                    raise WeightsIntegrityError(f"model version {version}: {exc}") from exc
        return card

    def domain_check(self, version: str) -> DomainCheck | EnsembleDomainCheck | None:
        """The domain check of ``version`` (:mod:`models.ood`): its card's own, an ensemble's
        (the most cautious of its members' checks), or None when it has none. Each statistics
        file is checked against the sha256 its card names."""
        card = self.card(version)
        folder = self.path(version)
        if card.is_ensemble:
            specs = [m.domain_check for m in card.members]
            if any(spec is None for spec in specs):
                return None  # the card allows all or none
            return EnsembleDomainCheck(
                tuple(load_domain_check(folder, spec) for spec in specs if spec is not None)
            )
        if card.domain_check is None:
            return None
        return load_domain_check(folder, card.domain_check)

    def load(self, version: str | None = None) -> tuple[nn.Module, ModelCard]:
        """The model of ``version`` (default: active) with its weights, eval mode, on the CPU.

        An ensemble version loads as one :class:`models.ensemble.Ensemble` of its members.
        """
        name = self._resolve(version)
        card = self.verify(name)
        if card.is_ensemble:
            members = [self._load_weights(name, card, m.file) for m in card.members]
            return Ensemble(members).eval(), card
        return self._load_weights(name, card, WEIGHTS_FILE).eval(), card

    def _load_weights(self, name: str, card: ModelCard, file: str) -> nn.Module:
        """``card``'s architecture with the state dict in ``file`` of version ``name``."""
        weights = self.path(name) / file
        try:
            state_dict = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsIntegrityError(
                f"model version {name}: {weights} is not a readable state dict: {exc}"
            ) from exc
        if not isinstance(state_dict, dict):
            raise WeightsIntegrityError(
                f"model version {name}: {weights} holds {type(state_dict).__name__}, "
                "not a state dict"
            )
        model = build_model(card.architecture, init="none", num_classes=len(card.classes))
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise WeightsIntegrityError(
                f"model version {name}: weights do not fit architecture {card.architecture}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        return model.eval()

    # --- saving ------------------------------------------------------------------------------
    def next_version(self) -> str:
        """The next automatic name: ``v0001``, ``v0002``, ..."""
        numbers = [int(m.group(1)) for v in self.versions() if (m := _AUTO_RE.match(v))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def save_version(
        self,
        model: nn.Module,
        card: ModelCard,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> str:
        """Store ``model``'s weights with ``card`` as a new version; returns its name.

        The card's ``version`` is used when set (it must be new), otherwise the next ``vNNNN``.
        ``weights_sha256`` and a new ``device_uid`` are always filled in here; ``created`` is kept
        when the trainer set it. ``extra_files`` (name -> bytes, e.g. the domain check's
        statistics the card names) are written into the version folder before it appears.
        The new version is not activated.
        """
        if card.is_ensemble:
            raise ValueError("an ensemble card is saved with save_ensemble, not save_version")

        def fill(tmp: Path) -> dict[str, Any]:
            weights = tmp / WEIGHTS_FILE
            with atomic_file(weights, mode=MODEL_FILE_MODE) as fh:
                torch.save(stored_state_dict(model, card.weights_dtype), fh)
            _write_extra_files(tmp, extra_files or {})
            return {"weights_sha256": sha256_file(weights)}

        return self._publish(card, fill)

    def save_ensemble(
        self,
        card: ModelCard,
        member_files: Mapping[str, Path],
        extra_files: Mapping[str, bytes] | None = None,
    ) -> str:
        """Store an ensemble version: ``card`` names its members, ``member_files`` maps each
        member's file name to the state dict to copy there (byte for byte, so its sha256 must
        be the member's); ``extra_files`` as in :meth:`save_version` (the members' domain
        statistics). Version name, Device UID and time as :meth:`save_version` sets them."""
        if not card.is_ensemble:
            raise ValueError("save_ensemble needs a card with members")
        wanted = {m.file for m in card.members}
        if set(member_files) != wanted:
            raise ValueError(
                f"member files {sorted(member_files)} do not match the card's {sorted(wanted)}"
            )

        def fill(tmp: Path) -> dict[str, Any]:
            for member in card.members:
                target = tmp / member.file
                with open(member_files[member.file], "rb") as src:
                    data = src.read()
                write_model_file(target, data)
                if sha256_file(target) != member.sha256:
                    raise WeightsIntegrityError(
                        f"member {member.origin or member.file}: {member_files[member.file]} "
                        f"does not have the sha256 the card names ({member.sha256})"
                    )
            _write_extra_files(tmp, extra_files or {})
            return {}

        return self._publish(card, fill)

    def _publish(self, card: ModelCard, fill: Callable[[Path], dict[str, Any]]) -> str:
        """Make a new version: ``fill`` writes its files into a hidden folder and returns card
        fields it computed; the card is written last and the folder renamed into place."""
        version = check_version_name(card.version) if card.version else self.next_version()
        if (self.root / version).exists():
            raise RegistryError(f"model version {version!r} already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            final = card.replace(
                **fill(tmp),
                version=version,
                device_uid=new_device_uid(),
                created=card.created or utc_now_iso(),
            )
            write_model_file(tmp / CARD_FILE, final.to_json().encode("utf-8"))
            os.chmod(tmp, 0o755)
            os.rename(tmp, self.root / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)  # the folder's rename, durable
        return version


def _write_extra_files(folder: Path, extra_files: Mapping[str, bytes]) -> None:
    """Write a version's other files (domain statistics); no name may be a registry file's."""
    for name, data in extra_files.items():
        if name in {WEIGHTS_FILE, CARD_FILE} or Path(name).name != name:
            raise ValueError(f"extra file name {name!r} is not allowed")
        write_model_file(folder / name, data)


def round_to_dtype(model: nn.Module, dtype: str) -> nn.Module:
    """Round ``model``'s floating-point parameters and buffers in place to what ``dtype`` holds.

    It loads back what :func:`stored_state_dict` would store (loading casts to the parameters'
    float32), so a model measured after this is the model serving will run.
    """
    model.load_state_dict(stored_state_dict(model, dtype))
    return model


def stored_state_dict(model: nn.Module, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """``model``'s state dict on the CPU with floating-point tensors as ``dtype`` (for saving)."""
    if dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {dtype!r}")
    target = getattr(torch, dtype)
    return {
        k: (v.detach().cpu().to(target) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }


def _version_sort_key(name: str) -> tuple[int, int, str]:
    match = _AUTO_RE.match(name)
    return (0, int(match.group(1)), name) if match else (1, 0, name)
