"""Moving a run's nodes to the next day: the run's clock (RUN/nodes/<agency>/date) advanced, and the nodes
followed until every one serves that date."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from pathlib import Path

from coordinator.transport import InProcessTransport, NodeTransport
from nodes.startup import DATE_FILE, node_dir
from runctx.files import write_atomic


class NodeDateError(RuntimeError):
    """A node did not move to the run's new date in time."""


class _RollWatch:
    """Reads a node's audit log as it grows, for the signed head that closes its roll to a date. The log,
    not the manifest, is watched: each GetManifest is itself logged, so polling it would make the node's
    log depend on timing (and a re-run's log could not equal it)."""

    def __init__(self, run_dir: Path, agency: str, date: dt.date) -> None:
        self.path = node_dir(run_dir, agency) / "audit.jsonl"
        self.date = date.isoformat()
        self.offset = 0

    def rolled(self) -> bool:
        """Whether the node has logged its signed head for the roll to the date."""
        if not self.path.exists():
            return False
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a line still being written: read it whole next time
                self.offset += len(line)
                entry = json.loads(line)
                data = entry.get("data") or {}
                mark = (entry.get("kind"), data.get("event"), data.get("epoch"))
                if mark == ("head", "rolled", self.date):
                    return True
        return False


def advance_nodes(
    run_dir: Path, transports: Mapping[str, NodeTransport], date: dt.date, timeout: float = 1800.0
) -> None:
    """Set the run's clock of every node to `date` and wait until each has rolled to it: a node process
    rolls on its own when its date file changes; an in-process node is rolled here."""
    watches = {agency: _RollWatch(run_dir, agency, date) for agency in transports}
    for agency, transport in transports.items():
        write_atomic(node_dir(run_dir, agency) / DATE_FILE, f"{date.isoformat()}\n".encode())
        if isinstance(transport, InProcessTransport):
            transport.handlers.roller.roll(date)
    deadline = time.monotonic() + timeout
    waiting = dict(watches)
    while waiting:
        waiting = {a: w for a, w in waiting.items() if not w.rolled()}
        if waiting and time.monotonic() > deadline:
            raise NodeDateError(f"nodes {sorted(waiting)} have not rolled to {date} after {timeout:.0f}s")
        if waiting:
            time.sleep(0.2)
