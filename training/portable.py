"""Paths in model cards and reports, written so that they mean something on another machine.

A card trained under ``/tmp/deepcovid-train`` on a GPU box named its registry and run folder
there, and a report named ``/work/shared/data/cxr/manifest.csv``: absolute paths say nothing on
the machine that reads the card, and they show another machine's layout. Each path is written
relative to one of these *anchors*: the one that holds it, else one it is at most :data:`MAX_UP`
folders beside (below a common folder other than ``/``); fewest ``..`` first, then the most
specific anchor (the deepest common folder):

- the repository: a plain relative path, ``.gpu/data/cxr/manifest.csv`` or
  ``../shared/data/cxr/manifest.csv``, which a checkout elsewhere resolves the same way;
- the model registry: ``<registry>/../runs/squeezenet1_1-c``;
- the manifest's folder (for image paths and a data root): ``<manifest>/images/a.jpg``.

Anything else keeps its last components behind ``<elsewhere>/``. The manifest's sha256, which
cards and reports record beside its path, identifies the data whatever the path. No
dependencies beyond the standard library: :mod:`training.manifest` uses this too.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.card import ModelCard

REPOSITORY = Path(__file__).resolve().parents[1]
"""The checkout (or installation) this code runs from."""
MAX_UP = 2
"""At most this many ``..`` steps from an anchor: further up, a relative path means little."""
REGISTRY = "<registry>"
MANIFEST = "<manifest>"
ELSEWHERE = "<elsewhere>"
PATH_FLAGS = frozenset({"--manifest", "--data-root", "--registry", "--run-dir", "--init", "--out"})
"""Flags of the training commands whose value is a path (``--init`` also takes a keyword)."""
PATH_PARAMETERS = frozenset({"manifest", "data_root", "init", "run_dir"})
"""Training parameters (``TrainConfig`` fields) that hold paths."""
KEYWORDS = frozenset({"none", "imagenet"})
_ABSOLUTE = re.compile(
    r"(?<![\w.:/<>~-])(?:/[\w.~-][^\s\"'`)\]|,;/]*/|~/|[A-Za-z]:[\\/])[^\s\"'`)\]|,;]*"
)
"""An absolute POSIX path of two components at least (``/tmp/x``; not an endpoint such as
``/metrics``), a home path or a Windows drive path, not preceded by a word character, ``.``,
``:`` or ``>`` (so ``n/a``, ``1/2``, ``../x``, ``<registry>/x`` and URLs do not match)."""


@dataclass(frozen=True)
class Anchors:
    """The folders paths are written relative to (see the module docstring)."""

    registry: Path | None = None
    manifest_dir: Path | None = None
    repository: Path = REPOSITORY

    def ordered(self, *, manifest: bool = True) -> list[tuple[str, Path]]:
        """``(label, folder)`` in order of preference; label ``""`` is the repository."""
        out: list[tuple[str, Path]] = [("", self.repository)]
        if self.registry is not None:
            out.append((REGISTRY, Path(self.registry)))
        if manifest and self.manifest_dir is not None:
            out.append((MANIFEST, Path(self.manifest_dir)))
        return out


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def portable_path(
    path: str | os.PathLike[str], anchors: Anchors, *, manifest: bool = True, tail: int = 2
) -> str:
    """``path`` relative to the nearest anchor, or its last ``tail`` parts behind
    ``<elsewhere>/``; a relative ``path`` is taken relative to the working directory first."""
    target = _absolute(path)
    best: tuple[tuple[int, int, int], str, str] | None = None
    for order, (label, folder) in enumerate(anchors.ordered(manifest=manifest)):
        root = _absolute(folder)
        try:
            common = Path(os.path.commonpath([target, root]))
        except ValueError:  # different drives
            continue
        if common == Path(common.anchor):
            continue
        rel = os.path.relpath(target, root)
        ups = Path(rel).parts.count("..")
        if ups > MAX_UP:
            continue
        # Fewest "..", then the most specific anchor (deepest common folder), then the order.
        rank = (ups, -len(common.parts), order)
        if best is None or rank < best[0]:
            best = (rank, label, rel)
    if best is None:
        return "/".join([ELSEWHERE, *target.parts[-tail:]])
    _, label, rel = best
    rel = Path(rel).as_posix()
    if not label:
        return rel
    return label if rel == "." else f"{label}/{rel}"


def resolve_portable(text: str, registry: Path | None = None) -> Path | None:
    """The file a card's path names on this machine, if it can be found: ``<registry>/...``
    under ``registry``; a relative path under the working directory or the repository."""
    if text.startswith(REGISTRY):
        if registry is None:
            return None
        return _absolute(Path(registry) / text.removeprefix(REGISTRY).lstrip("/"))
    if text.startswith("<"):
        return None
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    for base in (Path.cwd(), REPOSITORY):
        if (base / path).exists():
            return _absolute(base / path)
    return _absolute(path)


def _needs_quotes(token: str) -> bool:
    return not token or any(c in token for c in " \t\n'\"\\$`;&|*?()[]{}!#")


def portable_command(command: str, anchors: Anchors) -> str:
    """A recorded command line with the values of path flags and every absolute path made
    portable (``<registry>`` and friends are left unquoted: the line documents, it is not run
    as it is)."""
    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes: rewrite what looks like a path, keep the rest
        return _ABSOLUTE.sub(lambda m: portable_path(m.group(0), anchors), command)
    out: list[str] = []
    previous = ""
    for token in tokens:
        flag, eq, value = token.partition("=")
        if eq and flag in PATH_FLAGS:
            token = f"{flag}={_portable_value(value, anchors)}"
        elif previous in PATH_FLAGS:
            token = _portable_value(token, anchors)
        elif _ABSOLUTE.fullmatch(token):
            token = portable_path(token, anchors)
        out.append(shlex.quote(token) if _needs_quotes(token) else token)
        previous = token
    return " ".join(out)


def _portable_value(value: str, anchors: Anchors) -> str:
    if value in KEYWORDS or value.startswith("<"):
        return value
    return portable_path(value, anchors, manifest=False)


def portable_tree(value: Any, anchors: Anchors, *, path_keys: frozenset[str] = frozenset()) -> Any:
    """``value`` (JSON-like) with absolute paths in its strings made portable; the values of
    ``path_keys`` are paths even when relative (they are taken relative to the working folder)."""
    if isinstance(value, Mapping):
        return {
            k: (
                _portable_value(v, anchors)
                if k in path_keys and isinstance(v, str) and v
                else portable_tree(v, anchors, path_keys=path_keys)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(portable_tree(v, anchors, path_keys=path_keys) for v in value)
    if isinstance(value, str):
        return portable_text(value, anchors)
    return value


def portable_text(text: str, anchors: Anchors) -> str:
    """Free text (a note, a method, a Markdown line) with every absolute path made portable."""
    return _ABSOLUTE.sub(lambda m: portable_path(m.group(0), anchors), text)


def absolute_paths(text: str) -> list[str]:
    """The absolute paths in ``text``: what a portable card or report must not contain."""
    return _ABSOLUTE.findall(text)


def portable_card(
    card: ModelCard, anchors: Anchors, manifest_path: str | os.PathLike[str] | None = None
) -> ModelCard:
    """``card`` with portable paths: the manifest (``manifest_path`` when given, the path the
    card names otherwise), the command, the training parameters and the free text."""
    manifest = card.training_manifest
    if manifest_path is not None:
        manifest = portable_path(manifest_path, anchors, manifest=False)
    elif manifest and not manifest.startswith("<"):
        manifest = portable_text(manifest, anchors)
    return card.replace(
        training_manifest=manifest,
        training_command=portable_command(card.training_command, anchors),
        training_parameters=portable_tree(
            card.training_parameters, anchors, path_keys=PATH_PARAMETERS
        ),
        threshold_method=portable_text(card.threshold_method, anchors),
        notes=portable_text(card.notes, anchors),
    )
