"""``docs/architecture.md`` states facts the code decides; each is read from the page and checked
against the code, as ``test_settings.py`` checks ``docs/configuration.md``.

The facts: the packages and their layers (the import contracts in ``pyproject.toml``), the model
architectures and which one is shipped, the job states, the result objects the worker builds,
and that every file the page points to exists.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest

from common.paths import SHIPPED_REGISTRY
from common.states import JobState
from models.architectures import ARCHITECTURES, CLASSES, TORCHVISION_ARCHITECTURES
from models.registry import Registry
from tests.harness.net import REPO
from worker.results import ResultObjects

DOC = (REPO / "docs" / "architecture.md").read_text()
IMPORTLINTER = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES = [name for name in IMPORTLINTER["root_packages"] if name not in {"tests", "benchmarks"}]
"""The code's packages: import-linter's root packages less the two it reads only for a contract."""
LAYERS: list[str] = next(c for c in IMPORTLINTER["contracts"] if c["id"] == "layers")["layers"]


def _diagram() -> list[str]:
    """The lines of the page's first code block: the layer diagram."""
    block = re.search(r"^```\n(.*?)^```$", DOC, re.S | re.M)
    assert block, "docs/architecture.md has no layer diagram"
    return block.group(1).splitlines()


def _tuple_in_doc(name: str) -> tuple[str, ...]:
    """The string tuple the page writes as ``name = ("a", "b", ...)``."""
    found = re.search(rf"`{name} = \(([^)]*)\)`", DOC)
    assert found, f"docs/architecture.md states no {name}"
    return tuple(re.findall(r'"(\w+)"', found.group(1)))


def test_the_diagram_draws_the_layers_of_the_contract_top_down() -> None:
    lines = _diagram()
    rows = []
    for layer in LAYERS:
        names = [name.strip() for name in layer.split("|")]
        drawn = re.compile(r"^\s*" + r"\s*\|\s*".join(rf"\b{name}\b" for name in names))
        row = next((i for i, line in enumerate(lines) if drawn.search(line)), None)
        assert row is not None, f"the diagram does not draw the layer {layer!r}"
        rows.append(row)
    assert rows == sorted(rows) and len(set(rows)) == len(rows), "layers drawn out of order"


def test_every_package_is_drawn_and_every_table_row_is_a_package() -> None:
    drawn = set(re.findall(r"\b\w+\b", "\n".join(_diagram())))
    assert set(PACKAGES) <= drawn, f"not in the diagram: {sorted(set(PACKAGES) - drawn)}"
    table = re.findall(r"^\| `(\w+)` \|", DOC, re.M)
    assert table, "docs/architecture.md has no package table"
    assert set(table) <= set(PACKAGES), f"not packages: {sorted(set(table) - set(PACKAGES))}"


def test_the_architectures_are_the_codes() -> None:
    assert _tuple_in_doc("ARCHITECTURES") == ARCHITECTURES
    assert _tuple_in_doc("CLASSES") == CLASSES
    numbers = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    assert f"the first {numbers[len(TORCHVISION_ARCHITECTURES)]} built by torchvision" in DOC


def test_the_shipped_architecture_is_the_one_named() -> None:
    found = re.search(r"`(\w+)` is the shipped model's", DOC)
    assert found, "docs/architecture.md does not say which architecture is shipped"
    registry = Registry(SHIPPED_REGISTRY)
    version = registry.active_version()
    assert version is not None
    assert registry.card(version).architecture == found.group(1)


def test_the_job_states_are_the_codes() -> None:
    found = re.search(r"`JobState` \(([^)]*)\)", DOC)
    assert found, "docs/architecture.md does not list the job states"
    assert re.findall(r"`(\w+)`", found.group(1)) == [state.value for state in JobState]


def test_the_result_objects_are_the_ones_the_worker_builds() -> None:
    found = re.search(r"`ResultObjects\(([^)]*)\)`", DOC)
    assert found, "docs/architecture.md does not list the result objects"
    named = [name.strip() for name in found.group(1).split(",")]
    assert named == [field.name for field in dataclasses.fields(ResultObjects)]


@pytest.mark.parametrize("path", sorted(set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+)`", DOC))), ids=str)
def test_every_file_the_page_points_to_exists(path: str) -> None:
    assert (REPO / path).exists(), f"docs/architecture.md points to {path}, which is not there"
