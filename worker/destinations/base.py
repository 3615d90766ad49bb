"""The one interface every destination type implements, and the registry that picks the type.

A *destination* is where the outbox delivers: a DICOM peer by C-STORE (``AE@host:port``,
type ``dimse``), a DICOMweb origin by STOW-RS (``https://pacs/dicom-web``, type ``stowrs``), a
RIS by HL7 v2 over MLLP (``mllp://ris:2575``, type ``hl7``) or a FHIR server
(``fhir+https://ris/fhir``, type ``fhir``). Its *text* (exactly as configured, never holding a
credential) is stored on each outbox row, so every (result, destination) pair has its own state,
attempts and back-off. The type is chosen from the text by :func:`type_for`; each type lives in
its own module and registers itself with :func:`register`.

The delivery loop (:mod:`worker.delivery`) drives a destination through three calls:

1. :meth:`Destination.confirm` on retried rows (an earlier attempt's outcome is unknown), so
   that what the destination already holds is marked confirmed instead of sent twice;
2. :meth:`Destination.send` on the rest: per row, ``None`` (stored) or a :class:`DeliveryError`
   whose ``transient`` flag says whether to retry (back-off) or give up now;
3. :meth:`Destination.confirm` on the stored rows (setting ``delivery_verify``): found rows are
   ``confirmed``, rows it cannot find are retried, ``None`` (cannot be asked) leaves them ``sent``.
"""

from __future__ import annotations

import abc
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from common.settings import DestinationSettings, Settings
from store.outbox import ResultView

log = logging.getLogger(__name__)

#: What an outbox row carries, by its ``kind``: DICOM objects (``sr``, ``sc``, ``pm``, ``gsps``,
#: ``rejection_sr``, study-level objects ...) or RIS messages. A kind that starts with ``hl7``
#: is an HL7 v2 message file, one that starts with ``fhir`` a FHIR resource (JSON); any other
#: kind is a DICOM Part 10 file.
DICOM = "dicom"
HL7 = "hl7"
FHIR = "fhir"


def medium_of(kind: str) -> str:
    """What a row of ``kind`` holds: :data:`DICOM`, :data:`HL7` or :data:`FHIR`."""
    for medium in (HL7, FHIR):
        if kind.startswith(medium):
            return medium
    return DICOM


class DeliveryError(Exception):
    """A row not delivered; ``transient`` errors are retried with back-off, others fail now."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class TransientError(DeliveryError):
    """Worth retrying: the peer is down, busy, timed out, answered 5xx or out of resources."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class PermanentError(DeliveryError):
    """Retrying cannot help: the peer refuses this object (4xx, a DIMSE refusal, a bad file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to an HTTP destination; secrets are read from files when used.

    Reading at use (not at start) lets an operator rotate a token without a restart; the
    secret itself is never stored here, logged or put in an outbox row.
    """

    token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header to send (empty: none configured)."""
        import base64

        if self.token_file is not None:
            token = self.token_file.read_text(encoding="utf-8").strip()
            return {"Authorization": f"Bearer {token}"}
        if self.username is not None and self.password_file is not None:
            password = self.password_file.read_text(encoding="utf-8").strip()
            pair = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {pair}"}
        return {}


def trusted_ca(options: DestinationSettings, settings: Settings) -> Path | None:
    """The CA file a destination's certificate must chain to: its own ``ca``, else ``tls.ca``
    (``None``: the system's CAs)."""
    return options.ca or settings.tls.ca


def send_in_order(
    rows: Sequence[ResultView], send_one: Callable[[ResultView], DeliveryError | None]
) -> dict[int, DeliveryError | None]:
    """``send_one`` each row, in order, for types that send one message per row (HL7, FHIR).

    Once a row fails transiently (peer unreachable, timed out) the rest get that same error
    without being tried: each would only wait out the same timeout.
    """
    outcome: dict[int, DeliveryError | None] = {}
    unreachable: DeliveryError | None = None
    for row in rows:
        if unreachable is not None:
            outcome[row.id] = unreachable
            continue
        error = send_one(row)
        outcome[row.id] = error
        if isinstance(error, TransientError):
            unreachable = error
    return outcome


class Destination(abc.ABC):
    """One configured destination of one type; built per delivery run by :func:`open_destination`.

    Subclasses set :attr:`type_name`, :attr:`media` and :attr:`schemes` (or override
    :meth:`matches`), and implement :meth:`parse`, :meth:`send` and :meth:`confirm`.
    """

    type_name: ClassVar[str]
    """The registry key (``dimse``, ``stowrs``, ``hl7``, ``fhir``)."""
    media: ClassVar[frozenset[str]]
    """Which rows it takes, as :func:`medium_of` their kind (e.g. ``{DICOM}``)."""
    schemes: ClassVar[tuple[str, ...]] = ()
    """URL schemes that select this type (``("https", "http")``); matched case-insensitively."""

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def matches(cls, text: str) -> bool:
        """Whether destination ``text`` selects this type (default: by its URL scheme)."""
        scheme, sep, _ = text.strip().partition("://")
        return bool(sep) and scheme.lower() in cls.schemes

    @classmethod
    def accepts(cls, kind: str) -> bool:
        """Whether an outbox row of ``kind`` goes to destinations of this type."""
        return medium_of(kind) in cls.media

    @classmethod
    @abc.abstractmethod
    def parse(cls, options: DestinationSettings, settings: Settings) -> Destination:
        """Build from the destination's settings (``options.url`` is its text); ``ValueError``
        when the text is malformed (the rows then fail with that message, no retry)."""

    @abc.abstractmethod
    def send(self, rows: Sequence[ResultView]) -> dict[int, DeliveryError | None]:
        """Send ``rows`` (their files at ``row.path``); per row id: ``None`` when stored, else
        the error. A failure of the whole batch (peer unreachable) is a :class:`DeliveryError`
        for every row, not an exception."""

    @abc.abstractmethod
    def confirm(self, rows: Sequence[ResultView]) -> set[str] | None:
        """The ``sop_instance_uid`` values of ``rows`` the destination holds; ``None`` when it
        cannot be asked. May raise: the caller treats an exception as "cannot tell"."""

    @property
    @abc.abstractmethod
    def peer(self) -> tuple[str, str]:
        """(name, host) for the audit trail's destination participant (an AE title or URL)."""

    def __str__(self) -> str:
        """The destination's text (never holds a credential)."""
        return self.text


_REGISTRY: dict[str, type[Destination]] = {}
_MODULES = (
    "worker.destinations.dimse",
    "worker.destinations.stowrs",
    "worker.destinations.hl7",
    "worker.destinations.fhir",
)
_loaded = False


def register(cls: type[Destination]) -> type[Destination]:
    """Class decorator: make ``cls`` selectable by :func:`type_for` under ``cls.type_name``."""
    _REGISTRY[cls.type_name] = cls
    return cls


def registry() -> dict[str, type[Destination]]:
    """Every registered type by name (the type modules present are imported on first use)."""
    global _loaded
    if not _loaded:
        for name in _MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:  # the module exists but something it needs does not
                    raise
        _loaded = True
    return _REGISTRY


def type_for(text: str) -> type[Destination]:
    """The type destination ``text`` selects; ``ValueError`` when none does."""
    for cls in registry().values():
        if cls.matches(text):
            return cls
    known = ", ".join(sorted(registry()))
    raise ValueError(f"destination {text!r} selects no destination type (known: {known})")


def options_for(text: str, settings: Settings) -> DestinationSettings:
    """The configured options of destination ``text`` (defaults if it is no longer configured:
    rows queued for it are still delivered, without credentials)."""
    for target in settings.delivery.targets():
        if target.url == text:
            return target
    return DestinationSettings(url=text)


def open_destination(text: str, settings: Settings) -> Destination:
    """The destination of ``text`` with its configured options; ``ValueError`` if malformed."""
    return type_for(text).parse(options_for(text, settings), settings)
