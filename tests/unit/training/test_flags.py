"""``train``'s flags are generated from the config dataclasses: every field has one, and a config
written as flags parses back to the same config."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

import pytest

from training import flags
from training.commands.train import add_arguments, config_from_args
from training.config import AugmentSpec, PreprocessFlags, TrainConfig

OWN_VALUES: dict[str, Any] = {
    # Fields whose rules a generated value would break: chosen by hand.
    "device": "cpu",
    "finetune": "all",  # adversary_weight > 0 needs a trained backbone
    "jpeg_quality": 40,
    "target_sensitivity": 0.9,
    "downscale": 0.5,
}
"""Everything else gets a generated value that differs from its default."""


def _leaves(cls: Any) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The fields that are flags, with their type: nested dataclasses' fields in their place."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        nested = field.metadata.get("flags")
        if nested is None and dataclasses.is_dataclass(hints[field.name]):
            nested = hints[field.name]
        if nested is not None:
            found.extend(_leaves(nested))
        else:
            found.append((field, hints[field.name]))
    return found


def _changed(field: dataclasses.Field[Any], hint: Any) -> Any:
    """A value of ``field`` other than its default."""
    if field.name in OWN_VALUES:
        return OWN_VALUES[field.name]
    if "choices" in field.metadata:
        return next(c for c in field.metadata["choices"] if c != field.default)
    default = None if field.default is dataclasses.MISSING else field.default
    if isinstance(default, bool) or hint in (bool, bool | None):
        return not default
    if isinstance(default, tuple):
        return tuple(x * 0.5 if isinstance(x, float) else f"{x}-other" for x in default)
    if hint in (int, int | None):
        return (default or 0) + 1
    if hint in (float, float | None):
        return default * 0.5 if default else 0.25
    return f"{default or 'other'}-other"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def _argv(values: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def test_every_config_field_has_a_flag_with_help() -> None:
    options = _parser()._option_string_actions
    for field, _ in _leaves(TrainConfig):
        action = options.get(flags.flag_name(field))
        assert action is not None, f"{field.name} has no flag"
        assert action.help, f"{field.name}'s flag has no help"
        assert action.dest == field.name


def test_defaults_are_the_config_defaults() -> None:
    parsed = _parser().parse_args(["--manifest", "m.csv"])
    assert config_from_args(parsed) == TrainConfig(manifest="m.csv")
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --manifest is required: its field has no default


def test_every_field_round_trips_through_its_flag() -> None:
    values = {field.name: _changed(field, hint) for field, hint in _leaves(TrainConfig)}
    parsed = config_from_args(_parser().parse_args(_argv(values)))
    preprocess_names = {f.name for f in dataclasses.fields(PreprocessFlags)}
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    expected = TrainConfig(
        **{k: v for k, v in values.items() if k in top},
        preprocess={k: values[k] for k in preprocess_names},
        aug=AugmentSpec(**{f.name: values[f.name] for f in dataclasses.fields(AugmentSpec)}),
    )
    assert parsed == expected
    default = TrainConfig(manifest="")
    for field, _ in _leaves(TrainConfig):  # every flag was exercised with a non-default value
        if field.name in preprocess_names:
            assert parsed.preprocess[field.name] == values[field.name]
        elif hasattr(default.aug, field.name):
            assert getattr(parsed.aug, field.name) != getattr(default.aug, field.name)
        else:
            assert getattr(parsed, field.name) != getattr(default, field.name), field.name


def test_a_field_without_help_is_refused() -> None:
    @dataclasses.dataclass
    class Forgotten:
        size: int = 3

    with pytest.raises(TypeError, match="size: no help"):
        flags.add_arguments(argparse.ArgumentParser(), Forgotten)
