"""Moving a run's nodes to the next day: the run's clock (RUN/nodes/<agency>/date) advanced, and the nodes
followed until every one serves that date."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path

from coordinator.transport import InProcessTransport, NodeTransport
from nodes.startup import DATE_FILE, node_dir
from proto.healthpsi.v1 import node_pb2
from runctx.files import write_atomic


class NodeDateError(RuntimeError):
    """A node did not move to the run's new date in time."""


def serving_date(transport: NodeTransport) -> str:
    """The date a node serves, from its signed manifest."""
    return node_pb2.Manifest.FromString(transport.get_manifest().manifest).as_of


def advance_nodes(
    run_dir: Path, transports: Mapping[str, NodeTransport], date: dt.date, timeout: float = 1800.0
) -> None:
    """Set the run's clock of every node to `date` and wait until each serves it: a node process rolls on
    its own when its date file changes; an in-process node is rolled here."""
    for agency, transport in transports.items():
        write_atomic(node_dir(run_dir, agency) / DATE_FILE, f"{date.isoformat()}\n".encode())
        if isinstance(transport, InProcessTransport):
            transport.handlers.roller.roll(date)
    deadline = time.monotonic() + timeout
    waiting = dict(transports)
    while waiting:
        waiting = {a: t for a, t in waiting.items() if serving_date(t) != date.isoformat()}
        if waiting and time.monotonic() > deadline:
            raise NodeDateError(f"nodes {sorted(waiting)} do not serve {date} after {timeout:.0f}s")
        if waiting:
            time.sleep(0.5)
