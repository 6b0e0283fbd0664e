"""Suite-wide markers (whatever starts real servers, processes or a whole city is `slow`), the small run
the service tests share, and the one `bench all --quick` run the benchmark tests share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from healthpsi.cli import app
from tests.servers import build_run

SLOW_DIRS = {"integration", "e2e", "browser"}
"""Test folders whose every test starts real processes or servers (excluded by `make test-fast`)."""


@dataclass(frozen=True)
class BenchAll:
    """One `healthpsi bench all --quick --json --out DIR` run: its JSON document, DIR, and what it printed
    (stdout and stderr, where the tables go)."""

    document: dict[str, Any]
    out: Path
    output: str


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


@pytest.fixture(scope="session")
def bench_all_quick(tmp_path_factory: pytest.TempPathFactory) -> BenchAll:
    """`healthpsi bench all --quick --json --out DIR`, run once per session: the tests of each benchmark's
    section read it (each section is the run of that benchmark at its quick sizes)."""
    out = tmp_path_factory.mktemp("bench-all")
    result = CliRunner().invoke(app, ["bench", "all", "--quick", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return BenchAll(document=json.loads(result.stdout), out=out, output=result.output)
