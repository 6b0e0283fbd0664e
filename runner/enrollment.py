"""Both sides of the nodes' enrollment on one machine, as `healthpsi run` does it: each node generates its
own keys and request (`nodes.secrets.init_node`), then the authority signs it (`runctx.enroll`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nodes.secrets import init_node
from runctx.enroll import enroll_node
from runctx.scenario import Scenario


def enroll_nodes(run_dir: Path, agencies: Sequence[str]) -> None:
    """Initialise each agency's node (keys from the run's seed in a simulation, else the OS) and enroll it
    with the run's authority (RUN/pki must exist), replacing any earlier node keys."""
    scenario = Scenario.read(run_dir)
    for agency in agencies:
        rng = None if scenario is None else scenario.rng(f"node/{agency}")
        init_node(run_dir, agency, rng, force=True)
        enroll_node(run_dir, agency)
