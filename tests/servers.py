"""Real processes for the service tests: a small simulated run, a police node over it, and
`healthpsi serve` on port 0 — shared by the browser suite and the API tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

from tests.integration.conftest import NodeProcess

PERSONS = 1500
SEED = 7
START_TIMEOUT = 120.0


def build_run(out: Path, persons: int = PERSONS, seed: int = SEED) -> Path:
    """`healthpsi run` over a small city (nodes as real processes, stopped at its end); the run directory."""
    cmd = [sys.executable, "-m", "healthpsi.cli", "run", "--preset", "city-20k", "--seed", str(seed)]
    cmd += ["--persons", str(persons), "--out", str(out), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"healthpsi run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr}")
    return out


def start_police(run: Path) -> NodeProcess:
    """The run's police node (its indexes already built by the run) serving on 127.0.0.1:0, ready."""
    return NodeProcess(run, "police").wait_ready()


class ServiceProcess:
    """A real `healthpsi serve --listen 127.0.0.1:0` process; its port read from RUN/service/port."""

    def __init__(self, run: Path, *extra: str) -> None:
        self.run = run
        self.port_file = run / "service" / "port"
        self.port_file.unlink(missing_ok=True)
        self.log_path = run / "service" / f"serve-{time.monotonic_ns()}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = ["serve", "--run", str(run), "--listen", "127.0.0.1:0", *extra]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "healthpsi.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self.port = 0

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port> once ready."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the service printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServiceProcess:
        """Wait for the port file and a 200 from /api/v1/health."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"healthpsi serve exited {self.process.returncode}:\n{self.log()[-3000:]}")
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if text.isdigit():
                self.port = int(text)
                try:
                    with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=5) as response:
                        if json.load(response).get("status") == "ok":
                            return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"healthpsi serve not ready within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown), SIGKILL if it does not stop in time; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)


def outbox_code(run: Path, phone: str, after: int = 0) -> str:
    """The latest one-time code the SMS gateway (RUN/service/sms-outbox.jsonl) holds for `phone`, among
    its lines from number `after` on."""
    lines = (run / "service" / "sms-outbox.jsonl").read_text(encoding="utf-8").splitlines()[after:]
    codes = [m["code"] for m in map(json.loads, lines) if m["phone"] == phone]
    if not codes:
        raise AssertionError(f"no one-time code for {phone} in the SMS outbox")
    return str(codes[-1])


def outbox_lines(run: Path) -> int:
    """How many messages the SMS outbox holds (0 before the first)."""
    path = run / "service" / "sms-outbox.jsonl"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def unclaimed_people(run: Path, count: int) -> list[dict[str, str]]:
    """`count` people of the population register who hold no code yet (not among the run's applicants):
    subject_id, name and birth_date (ISO), in subject-id order."""
    population = pq.read_table(run / "data" / "police" / "population.parquet").to_pandas()
    applied = set(pq.read_table(run / "health" / "applicants.parquet").column("subject_id").to_pylist())
    free = population[~population["subject_id"].isin(applied)].sort_values("subject_id").head(count)
    if len(free) < count:
        raise AssertionError(f"the run has only {len(free)} people without a code; {count} wanted")
    return [
        {"subject_id": str(r.subject_id), "name": str(r.name), "birth_date": str(r.birth_date)[:10]}
        for r in free.itertuples()
    ]
