"""Records read from JSON refuse keys they have no field for, naming them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from common.records import known_fields


@dataclass
class Point:
    x: int
    y: int = 0


def test_known_keys_become_keyword_arguments() -> None:
    assert Point(**known_fields(Point, {"x": 1}, "point fields")) == Point(1, 0)


def test_unknown_keys_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"unknown point fields: w, z"):
        known_fields(Point, {"x": 1, "z": 2, "w": 3}, "point fields")
