"""Agency nodes as real `healthpsi node serve` processes on loopback, started and stopped by a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runctx.progress import Progress


class NodeProcessError(RuntimeError):
    """A node process failed to start, died, or did not stop cleanly."""


@dataclass
class NodeProcess:
    """One running node: its agency, its process and the loopback address it listens on."""

    agency: str
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def stop(self, grace_seconds: float = 20.0) -> int:
        """Send SIGTERM, wait for a clean exit, and return the exit code (SIGKILL after the grace period)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired as exc:
                self.process.kill()
                self.process.wait()
                raise NodeProcessError(f"{self.agency} node did not stop in {grace_seconds:.0f}s") from exc
        return self.process.returncode


def node_command(
    run_dir: Path, agency: str, listen: str, workers: int | None, extra: Sequence[str] = ()
) -> list[str]:
    """The command line that serves one agency's node (`extra`: further `node serve` options)."""
    cmd = [sys.executable, "-m", "healthpsi.cli", "node", "serve", "--run", str(run_dir), "--agency", agency]
    cmd += ["--listen", listen]
    if workers:
        cmd += ["--workers", str(workers)]
    return [*cmd, *extra]


def spawn_node(
    run_dir: Path,
    agency: str,
    workers: int | None = None,
    extra: Sequence[str] = (),
    log_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `healthpsi node serve` for one agency on 127.0.0.1 with an OS-chosen port; do not wait.

    Its output is appended to `log_path` (default RUN/nodes/<agency>/serve.log)."""
    state = run_dir / "nodes" / agency
    state.mkdir(parents=True, exist_ok=True)
    (state / "port").unlink(missing_ok=True)
    log_path = log_path or state / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            node_command(run_dir, agency, "127.0.0.1:0", workers, extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    return proc, log_path


def wait_serving(
    run_dir: Path, agency: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 1800.0
) -> NodeProcess:
    """Wait until the node has built its indexes and published its port in RUN/nodes/<agency>/port."""
    port_file = run_dir / "nodes" / agency / "port"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise NodeProcessError(f"{agency} node exited with code {proc.returncode} on start:\n{tail}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdigit():
            return NodeProcess(agency=agency, process=proc, address=f"127.0.0.1:{text}", log_path=log_path)
        time.sleep(0.1)
    proc.kill()
    raise NodeProcessError(f"{agency} node did not start serving within {timeout:.0f}s (log: {log_path})")


def start_nodes(
    run_dir: Path,
    agencies: Sequence[str],
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, NodeProcess]:
    """Start every agency's node at once (they build their indexes side by side) and wait for all.

    `progress("nodes", ready, total)` is called as each node starts serving.
    """
    spawned = {agency: spawn_node(run_dir, agency, workers) for agency in agencies}
    started: dict[str, NodeProcess] = {}
    report = progress or (lambda stage, done, total: None)
    report("nodes", 0, len(spawned))
    try:
        for agency, (proc, log_path) in spawned.items():
            started[agency] = wait_serving(run_dir, agency, proc, log_path)
            report("nodes", len(started), len(spawned))
    except BaseException:
        for proc, _ in spawned.values():
            if proc.poll() is None:
                proc.kill()
        raise
    return started
