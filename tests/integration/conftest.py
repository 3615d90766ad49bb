"""The integration layer: every test here starts real servers or processes, and is marked so.

The mark comes from where a test lives, not from a line each file must remember:
``pytest -m "not integration"`` selects exactly ``tests/unit``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
