"""What the service's end-to-end modules share: each module's own `run`, served by a police node and a
`healthpsi serve` with two workers for the whole module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import NodeProcess
from tests.servers import ServiceProcess, served


@pytest.fixture(scope="module")
def served_run(run: Path) -> Iterator[tuple[NodeProcess, ServiceProcess]]:
    """The module's `run` served: (police node, service)."""
    with served(run, workers=2) as both:
        yield both


@pytest.fixture(scope="module")
def service(served_run: tuple[NodeProcess, ServiceProcess]) -> ServiceProcess:
    """The module's service."""
    return served_run[1]
