"""Suite-wide markers (whatever starts real servers, processes or a whole city is `slow`) and the small run
the service tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import build_run

SLOW_DIRS = {"integration", "e2e", "browser"}
"""Test folders whose every test starts real processes or servers (excluded by `make test-fast`)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under integration/, e2e/ and browser/ as slow."""
    for item in items:
        if SLOW_DIRS & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small simulated run per session (`healthpsi run --persons 1500`, seed 7), never served: the tests
    of the service each serve a copy of it (`tests.servers.copy_run`)."""
    return build_run(tmp_path_factory.mktemp("template") / "run")
