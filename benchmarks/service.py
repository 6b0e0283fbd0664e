"""The load benchmark of the code service: `healthpsi serve --workers N` over a small run, driven headless
on loopback by locust (benchmarks/loadtest/locustfile.py) in two phases with the same users:

- baseline: every user asks /api/v1/health, the service's cheapest answer;
- codes: every user is a signed-in citizen fetching their code's JSON, and nothing else;
- applications: every user is a signed-in citizen applying for a family member, and nothing else (people of
  the register without a code, cycled: on a small run most are asked again, answered from the identity
  check's stored answers without a new charge);
- peak: the morning peak — citizens fetching their code (most traffic), applying, checking a trip;
  verifiers fetching the lists; a commander watching.

Per phase: requests/s, p50/p95/p99 per endpoint, failures, the CPU share of the service's process tree
and of locust (both on this machine), and the service's resident memory at the start and end (sampled
every few seconds: a soak shows whether it stays flat). Code fetches are also given as a ratio to the
baseline's rate, which says how much of the server's plain HTTP capacity a code costs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import requests

from benchmarks import Step
from runner.processes import start_nodes
from service.commander.accounts import OperatorStore
from service.process import ServiceProcess

LOCUSTFILE = Path(__file__).resolve().parent / "loadtest" / "locustfile.py"
PEAK_USERS = ("CitizenUser", "VerifierUser", "CommanderUser")
BASELINE_USERS = ("BaselineUser",)
CODE_FETCH = "GET /api/v1/citizen/codes/[id]"
BASELINE = "GET /api/v1/health"
TARGETS = {"code_fetch_per_s": 1000.0, "code_fetch_p99_ms": 100.0, "failures": 0}
"""Issue 20's targets for code fetches on this machine, locust included."""
APPLY = "POST /api/v1/citizen/applications"
APPLY_TARGETS = {"applications_per_s": 200.0, "applications_p99_ms": 1000.0, "failures": 0}
"""Issue 20's targets for applications (identity checked over PSI)."""
PROBES = {
    CODE_FETCH: ("GET", "/api/v1/citizen/codes/probe"),
    "GET /citizen/codes/[id]": ("GET", "/citizen/codes/probe"),
    "GET /api/v1/citizen/codes": ("GET", "/api/v1/citizen/codes"),
    "POST /api/v1/citizen/applications": ("POST", "/api/v1/citizen/applications"),
    "GET /api/v1/cotravel/manifest": ("GET", "/api/v1/cotravel/manifest"),
    "GET /api/v1/verifier/trustlist": ("GET", "/api/v1/verifier/trustlist"),
    "GET /api/v1/verifier/revocations": ("GET", "/api/v1/verifier/revocations"),
    "GET /api/v1/commander/summary": ("GET", "/api/v1/commander/summary"),
}
"""A route per endpoint of the peak, asked once without a session: FastAPI's bare 404 means not deployed."""
ABSENT = b'{"detail":"Not Found"}'
SAMPLE_SECONDS = 5.0
FAMILY = 2000
"""People without a code lined up for family applications (then cycled)."""


@dataclass(frozen=True)
class ServiceBenchSettings:
    """One load benchmark: the run served, the load, and the service's workers."""

    run: Path | None = None
    """Serve this run (default: simulate a fresh one, `persons` people, into a temporary directory)."""
    persons: int = 1500
    seed: int = 3
    users: int = 50
    spawn_rate: float = 25.0
    seconds: int = 60
    """Length of the peak phase (the baseline phase takes a third of it, at least 5 s)."""
    workers: int = 2
    pace: float = 0.0
    """Requests per second per user (0: each user asks again as soon as it has an answer)."""
    sessions: int = 10
    """Citizens signed in before the peak (one-time codes are limited per address)."""

    @classmethod
    def quick(cls) -> ServiceBenchSettings:
        """A few users for a few seconds (a smoke test of the whole chain; the figures mean nothing)."""
        return cls(users=4, spawn_rate=4.0, seconds=8, sessions=2)

    @property
    def baseline_seconds(self) -> int:
        """Length of the baseline phase."""
        return max(5, self.seconds // 3)

    def steps(self) -> int:
        """Progress steps of `run_service_bench`."""
        return 6 if self.run is not None else 7


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _rss(processes: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class _Sampler:
    """Samples the service tree's resident memory every SAMPLE_SECONDS in a thread."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._started, 1), _rss(self.service.tree())))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((round(time.monotonic() - self._started, 1), _rss(self.service.tree())))


def _ms(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def _read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """Locust's `<prefix>_stats.csv`: per endpoint ("METHOD path", and "Aggregated") counts, rate and
    percentiles."""
    out: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            out[f"{row['Type']} {row['Name']}".strip()] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "requests_per_s": round(float(row["Requests/s"]), 1),
                "p50_ms": _ms(row["50%"]),
                "p95_ms": _ms(row["95%"]),
                "p99_ms": _ms(row["99%"]),
                "max_ms": round(float(row["Max Response Time"]), 1),
            }
    return out


def _phase(
    name: str,
    users: Sequence[str],
    seconds: int,
    settings: ServiceBenchSettings,
    service: ServiceProcess,
    env: dict[str, str],
    work: Path,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """One headless locust run against the service; its figures and the machine's during it."""
    prefix = work / name
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    if tags:
        cmd += ["--tags", *tags]
    cmd += ["-u", str(settings.users), "-r", str(settings.spawn_rate), "-t", f"{seconds}s", "-H", service.url]
    cmd += ["--csv", str(prefix), "--reset-stats", "--stop-timeout", "5", "--loglevel", "WARNING", *users]
    log = work / f"{name}-locust.log"
    with _Sampler(service) as memory, log.open("wb") as out:
        busy0, served0, wall0 = _machine_busy(), _cpu_seconds(service.tree()), time.monotonic()
        locust = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        driver = _tree(locust.pid)
        driver_cpu = 0.0
        while locust.poll() is None:
            driver = _tree(locust.pid) or driver
            driver_cpu = max(driver_cpu, _cpu_seconds(driver))
            time.sleep(0.5)
        busy1, served1, wall1 = _machine_busy(), _cpu_seconds(service.tree()), time.monotonic()
    stats_path = prefix.with_name(prefix.name + "_stats.csv")
    if locust.returncode not in (0, 1) or not stats_path.exists():  # 1: some requests failed
        raise RuntimeError(
            f"locust wrote no statistics ({locust.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
        )
    stats = _read_stats(stats_path)
    total = stats.pop("Aggregated")
    capacity = (wall1 - wall0) * (psutil.cpu_count() or 1)
    service_cpu = served1 - served0
    return {
        "users": list(users),
        "seconds": seconds,
        "requests": total["requests"],
        "failures": total["failures"],
        "requests_per_s": total["requests_per_s"],
        "endpoints": stats,
        "service_cpu_share": round(service_cpu / capacity, 3),
        # what a request costs the service whatever else the machine runs: the ceiling is cpus / this
        "service_cpu_ms_per_request": round(1000 * service_cpu / max(total["requests"], 1), 2),
        "locust_cpu_share": round(driver_cpu / capacity, 3),
        "other_cpu_share": round(max(0.0, (busy1 - busy0) - service_cpu - driver_cpu) / capacity, 3),
        "service_rss_start_bytes": memory.samples[0][1],
        "service_rss_end_bytes": memory.samples[-1][1],
        "service_rss_max_bytes": max(rss for _, rss in memory.samples),
        "service_rss_samples": memory.samples,
    }


def _absent_routes(url: str) -> list[str]:
    """The peak's endpoints this service does not have (a bare 404 to a request without a session)."""
    absent = []
    for name, (method, path) in PROBES.items():
        request = urllib.request.Request(url + path, method=method, data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and exc.read() == ABSENT:
                absent.append(name)
    return absent


def _outbox_code(run: Path, phone: str) -> str | None:
    """The latest one-time code the SMS outbox holds for `phone`."""
    path = run / "service" / "sms-outbox.jsonl"
    if not path.exists():
        return None
    messages = map(json.loads, path.read_text(encoding="utf-8").splitlines())
    codes = [m["code"] for m in messages if m["phone"] == phone]
    return str(codes[-1]) if codes else None


def _sign_in(url: str, run: Path, person: dict[str, str]) -> dict[str, Any] | None:
    """Sign an applicant in by phone and one-time code: their session cookie, phone and code ids (applying
    for themselves when they hold none); None when the service has no citizen app or refuses."""
    web = requests.Session()
    sent = web.post(f"{url}/api/v1/citizen/otp", json={"phone": person["phone"]}, timeout=60)
    otp = _outbox_code(run, person["phone"]) if sent.status_code == 202 else None
    if otp is None:
        return None
    signed = web.post(
        f"{url}/api/v1/citizen/session", json={"phone": person["phone"], "otp": otp}, timeout=60
    )
    if signed.status_code != 200:
        return None
    listed = web.get(f"{url}/api/v1/citizen/codes", timeout=60).json()
    codes = [a["code_id"] for a in listed if a.get("code_id")]
    if not codes:
        applied = web.post(
            f"{url}/api/v1/citizen/applications", json={"relation": "self", **person}, timeout=120
        )
        if applied.status_code == 201:
            codes = [applied.json()["code_id"]]
    cookie = web.cookies.get("healthpsi_session")
    return {"cookie": cookie, "phone": person["phone"], "codes": codes} if cookie else None


def _people(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """The rows of a people table with every one of `columns` (none when the file lacks one)."""
    if not path.exists() or not set(columns) <= set(pq.read_schema(path).names):
        return []
    rows = pq.read_table(path, columns=columns).to_pylist()
    return [{k: str(v) for k, v in row.items()} for row in rows if None not in row.values()]


def prepare_citizens(url: str, run: Path, sessions: int, out: Path) -> int:
    """Sign `sessions` applicants in and line up people without a code for family applications, in `out`
    (the locustfile's HEALTHPSI_BENCH_CITIZENS); how many signed in."""
    applicants = _people(run / "health" / "applicants.parquet", ["subject_id", "name", "birth_date"])
    random.Random(7).shuffle(applicants)
    # the register holds no phone numbers: each citizen signs in with a number of its own
    chosen = [{**p, "phone": f"139{i:08d}"} for i, p in enumerate(applicants[:sessions])]
    signed = [s for s in (_sign_in(url, run, p) for p in chosen) if s is not None]
    claimed = {p["subject_id"] for p in applicants}
    register = _people(run / "data" / "police" / "population.parquet", ["subject_id", "name", "birth_date"])
    family = [p for p in register if p["subject_id"] not in claimed][:FAMILY]
    out.write_text(json.dumps({"sessions": signed, "family": family}), encoding="utf-8")
    return len(signed)


@contextlib.contextmanager
def _served_run(settings: ServiceBenchSettings, work: Path, step: Step) -> Iterator[Path]:
    if settings.run is not None:
        yield settings.run
        return
    run = work / "run"
    cmd = [sys.executable, "-m", "healthpsi.cli", "run", "--preset", "city-20k", "--seed", str(settings.seed)]
    cmd += ["--persons", str(settings.persons), "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(
            f"healthpsi run exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    step("simulated a run")
    yield run


def code_fetch_summary(
    baseline: dict[str, Any], codes: dict[str, Any], peak: dict[str, Any], absent: Sequence[str]
) -> dict[str, Any]:
    """The code-fetch phase against the issue's targets, and as ratios to the baseline (rate, and the
    service's CPU per request); the code fetches' figures within the peak beside them."""
    if CODE_FETCH in absent or CODE_FETCH not in codes["endpoints"]:
        return {"served": False, "targets": TARGETS}
    fetch = codes["endpoints"][CODE_FETCH]
    base = baseline["endpoints"].get(BASELINE, {})
    rate, p99 = fetch["requests_per_s"], fetch["p99_ms"]
    in_peak = peak["endpoints"].get(CODE_FETCH, {})
    base_cpu = baseline["service_cpu_ms_per_request"]
    return {
        "served": True,
        "requests_per_s": rate,
        "p99_ms": p99,
        "failures": fetch["failures"],
        "service_cpu_ms_per_request": codes["service_cpu_ms_per_request"],
        "in_peak": {k: in_peak.get(k) for k in ("requests_per_s", "p99_ms", "failures")},
        "share_of_peak_requests": round(in_peak.get("requests", 0) / max(peak["requests"], 1), 3),
        "vs_baseline_rate": round(rate / base["requests_per_s"], 3) if base.get("requests_per_s") else None,
        "vs_baseline_cpu": round(codes["service_cpu_ms_per_request"] / base_cpu, 2) if base_cpu else None,
        "targets": TARGETS,
        "meets_targets": rate >= TARGETS["code_fetch_per_s"]
        and p99 is not None
        and p99 < TARGETS["code_fetch_p99_ms"]
        and fetch["failures"] == TARGETS["failures"],
    }


def application_summary(applications: dict[str, Any], absent: Sequence[str]) -> dict[str, Any]:
    """The applications phase against the issue's targets."""
    if APPLY in absent or APPLY not in applications["endpoints"]:
        return {"served": False, "targets": APPLY_TARGETS}
    apply = applications["endpoints"][APPLY]
    rate, p99 = apply["requests_per_s"], apply["p99_ms"]
    return {
        "served": True,
        "requests_per_s": rate,
        "p99_ms": p99,
        "failures": apply["failures"],
        "service_cpu_ms_per_request": applications["service_cpu_ms_per_request"],
        "targets": APPLY_TARGETS,
        "meets_targets": rate >= APPLY_TARGETS["applications_per_s"]
        and p99 is not None
        and p99 < APPLY_TARGETS["applications_p99_ms"]
        and apply["failures"] == APPLY_TARGETS["failures"],
    }


def run_service_bench(settings: ServiceBenchSettings, step: Step) -> dict[str, Any]:
    """Start the service (and the police node, for applications) over a run, drive it with locust in a
    baseline phase and a peak phase, and return the figures (JSON-ready)."""
    with (
        tempfile.TemporaryDirectory(prefix="healthpsi-bench-service-") as tmp,
        _served_run(settings, Path(tmp), step) as run,
    ):
        work = Path(tmp)
        user, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        operators = OperatorStore(run / "service")
        operators.add(user, password)
        nodes = start_nodes(run, ["police"]) if (run / "nodes" / "police").is_dir() else {}
        extra = [arg for node in nodes.values() for arg in ("--node", f"{node.agency}={node.address}")]
        service = ServiceProcess(run, *extra, workers=settings.workers, log_path=work / "serve.log")
        try:
            service.wait_ready()
            step("service ready")
            absent = _absent_routes(service.url)
            signed_in = prepare_citizens(service.url, run, settings.sessions, work / "citizens.json")
            env = dict(
                os.environ,
                HEALTHPSI_BENCH_CITIZENS=str(work / "citizens.json"),
                HEALTHPSI_BENCH_PACE=str(settings.pace),
                HEALTHPSI_BENCH_OPERATOR=user,
                HEALTHPSI_BENCH_PASSWORD=password,
            )
            baseline = _phase(
                "baseline", BASELINE_USERS, settings.baseline_seconds, settings, service, env, work
            )
            step("baseline phase")
            codes = _phase(
                "codes", ("CitizenUser",), settings.baseline_seconds, settings, service, env, work, ["code"]
            )
            step("code-fetch phase")
            applications = _phase(
                "applications", ("CitizenUser",), settings.baseline_seconds, settings, service, env, work,
                ["apply"],
            )
            step("applications phase")
            peak = _phase("peak", PEAK_USERS, settings.seconds, settings, service, env, work)
            step("peak phase")
        finally:
            service.stop()
            for node in nodes.values():
                node.stop()
            operators.remove(user)
        step("stopped")
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "cpus": psutil.cpu_count(),
        "absent_routes": absent,
        "citizens_signed_in": signed_in,
        "phases": {"baseline": baseline, "codes": codes, "applications": applications, "peak": peak},
        "code_fetch": code_fetch_summary(baseline, codes, peak, absent),
        "applications": application_summary(applications, absent),
    }
