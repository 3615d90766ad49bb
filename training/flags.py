"""Command-line flags generated from a dataclass's fields, and the dataclass built back from them.

A training option is written once, as a field of :class:`training.config.TrainConfig` (or of a
dataclass it nests) with its help in the field's metadata (:func:`option`); ``train`` gets the
flag ``--field-name`` from it and :func:`from_args` the value back. The flag follows the field:

- its default is the field's default; a field without one is a required flag;
- ``bool`` becomes ``--name / --no-name`` (``negatable=False``: a plain ``--name`` switch);
- ``int``, ``float``, ``str`` and ``X | None`` parse as that type (None: the flag was not given);
- ``tuple[T, T]`` takes two values, ``tuple[T, ...]`` one or more;
- a field whose type is a dataclass contributes that dataclass's flags (``aug``: the augmentation
  ranges); metadata ``flags=SomeDataclass, convert=fn`` does the same for a field of another
  type, ``convert`` turning the nested dataclass into the field's value (``preprocess``).

Metadata keys besides ``help``: ``choices``, ``metavar``, ``group`` (the title of an argument
group; its description is passed to :func:`add_arguments`), ``negatable``, ``flags``, ``convert``.
Stdlib only: ``deepcovid`` builds these parsers at start-up, before torch is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

FieldsOwner = Any
"""A dataclass type (``type[DataclassInstance]`` is not public)."""

_NO_DEFAULT = object()
"""What :func:`_default` returns for a required field."""


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    **meta: Any,
) -> Any:
    """A dataclass field that is also a flag: ``field(default=..., metadata={"help": ...})``.

    Without ``default`` (or ``default_factory``) the field, and so its flag, is required.
    """
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"help": help, **meta}
    )


def flag_name(field: dataclasses.Field[Any]) -> str:
    """``--rotate-deg`` for ``rotate_deg``."""
    return "--" + field.name.replace("_", "-")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _NO_DEFAULT


def _nested(field: dataclasses.Field[Any], hint: Any) -> FieldsOwner | None:
    """The dataclass whose flags stand for ``field`` (None: the field is one flag)."""
    if "flags" in field.metadata:
        return field.metadata["flags"]
    return hint if dataclasses.is_dataclass(hint) else None


def _without_none(hint: Any) -> Any:
    """``int`` for ``int | None``; other hints unchanged."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _argparse_kwargs(field: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    meta = field.metadata
    default = _default(field)
    if "help" not in meta:
        raise TypeError(f"field {field.name}: no help in its metadata (training.flags.option)")
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if default is _NO_DEFAULT:
        kwargs["required"] = True
    else:
        kwargs["default"] = list(default) if isinstance(default, tuple) else default
    base = _without_none(hint)
    if base is bool:
        negatable = meta.get("negatable", True)
        kwargs["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
    elif typing.get_origin(base) is tuple:
        items = typing.get_args(base)
        kwargs["type"] = items[0]
        kwargs["nargs"] = "+" if items[-1] is Ellipsis else len(items)
    elif base in (int, float, str):
        kwargs["type"] = base
    else:
        raise TypeError(f"field {field.name}: no flag for type {hint!r}")
    for key in ("choices", "metavar"):
        if key in meta:
            kwargs[key] = meta[key]
    return kwargs


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: FieldsOwner,
    groups: Mapping[str, str] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (nested dataclasses' fields too) to ``parser``.

    ``groups`` maps the titles of fields' ``group`` metadata to the groups' descriptions.
    """
    made: dict[str, argparse._ArgumentGroup] = {}
    _add(parser, cls, groups or {}, made)


def _add(
    parser: argparse.ArgumentParser,
    cls: FieldsOwner,
    groups: Mapping[str, str],
    made: dict[str, argparse._ArgumentGroup],
) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        nested = _nested(field, hints[field.name])
        if nested is not None:
            _add(parser, nested, groups, made)
            continue
        title = field.metadata.get("group")
        target: argparse.ArgumentParser | argparse._ArgumentGroup = parser
        if title is not None:
            if title not in made:
                made[title] = parser.add_argument_group(title, groups.get(title))
            target = made[title]
        target.add_argument(flag_name(field), **_argparse_kwargs(field, hints[field.name]))


def from_args(cls: FieldsOwner, args: argparse.Namespace) -> Any:
    """The ``cls`` the parsed flags describe (lists back to tuples, nested dataclasses built)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        nested = _nested(field, hints[field.name])
        if nested is not None:
            built = from_args(nested, args)
            convert: Callable[[Any], Any] = field.metadata.get("convert", lambda value: value)
            values[field.name] = convert(built)
            continue
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)
