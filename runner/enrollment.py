"""Both sides of the nodes' enrollment on one machine, as `healthpsi run` does it: each node generates its
own keys and request (`nodes.secrets.init_node`), then the authority signs it (`runctx.enroll`). In a
simulation the run also plays the police operator, who declares how many applications its node answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from coordinator.applicants import applicants_path
from nodes.budget import DEFAULT_FLOOR, BudgetPolicy, write_budget
from nodes.secrets import init_node
from runctx.enroll import enroll_node
from runctx.scenario import Scenario


def declared_applications(run_dir: Path) -> int | None:
    """The identity checks a simulated police operator declares per epoch: one per application in the
    simulation's applicants file, plus a tenth for applications made at the code service (None without
    the file)."""
    path = applicants_path(run_dir)
    if not path.exists():
        return None
    count = pq.ParquetFile(path).metadata.num_rows
    return count + count // 10 + DEFAULT_FLOOR


def enroll_nodes(run_dir: Path, agencies: Sequence[str]) -> None:
    """Initialise each agency's node (keys from the run's seed in a simulation, else the OS) and enroll it
    with the run's authority (RUN/pki must exist), replacing any earlier node keys; the police node's
    identity cap is the simulation's declared applications (`declared_applications`)."""
    scenario = Scenario.read(run_dir)
    for agency in agencies:
        rng = None if scenario is None else scenario.rng(f"node/{agency}")
        init_node(run_dir, agency, rng, force=True)
        applications = declared_applications(run_dir) if agency == "police" else None
        if applications is not None:
            write_budget(run_dir, agency, BudgetPolicy({"identity": applications}))
        enroll_node(run_dir, agency)
