"""Real processes for the service tests: a small simulated run, a police node over it, and
`healthpsi serve` on port 0 — shared by the browser suite and the API tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from crypto.pki import load_ec_private_key, read_json, sign_document
from runctx.pki import PkiPaths, save_json
from service.process import ServiceProcess
from tests.integration.conftest import NodeProcess

__all__ = [
    "ServiceProcess", "build_run", "copy_run", "outbox_code", "outbox_lines", "served", "start_police",
    "unclaimed_people",
]

PERSONS = 1500
SEED = 7


def build_run(out: Path, persons: int = PERSONS, seed: int = SEED) -> Path:
    """`healthpsi run` over a small city (nodes as real processes, stopped at its end); the run directory."""
    cmd = [sys.executable, "-m", "healthpsi.cli", "run", "--preset", "city-20k", "--seed", str(seed)]
    cmd += ["--persons", str(persons), "--out", str(out), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"healthpsi run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr}")
    return out


def copy_run(template: Path, out: Path) -> Path:
    """A copy of a finished run that no service has touched yet, for tests that write to it."""
    shutil.copytree(template, out, symlinks=True)
    return out


@contextlib.contextmanager
def served(run: Path, workers: int = 1) -> Iterator[tuple[NodeProcess, ServiceProcess]]:
    """The run's police node and `healthpsi serve` asking it (on port 0), stopped at the end (the service
    first, with SIGTERM: its workers sign their heads)."""
    police = start_police(run)
    try:
        service = ServiceProcess(run, "--node", f"police={police.address}", workers=workers).wait_ready()
        try:
            yield police, service
        finally:
            service.stop()
    finally:
        police.terminate()


def start_police(run: Path) -> NodeProcess:
    """The run's police node (its indexes already built by the run) serving on 127.0.0.1:0, ready."""
    return NodeProcess(run, "police").wait_ready()


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


def republish_trust_list(run: Path, issued_at: str) -> None:
    """Re-sign the run's trust list as of `issued_at` (ISO time) with its root, as the authority re-publishes
    it: a live service issues codes at the wall clock, long after a simulated run's list went stale."""
    paths = PkiPaths(run)
    body = {k: v for k, v in read_json(paths.trustlist, "trust list").items() if k != "signature"}
    at = issued_at.replace("+00:00", "Z")
    save_json(paths.trustlist, sign_document({**body, "issued_at": at}, load_ec_private_key(paths.root_key)))

