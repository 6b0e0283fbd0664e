"""Suite-wide markers: whatever starts real servers, processes or a whole city is `slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_DIRS = {"integration", "e2e", "browser"}
"""Test folders whose every test starts real processes or servers (excluded by `make test-fast`)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under integration/, e2e/ and browser/ as slow."""
    for item in items:
        if SLOW_DIRS & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.slow)
