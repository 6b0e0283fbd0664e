"""The private co-travel check against a real `healthpsi serve`: the browser client (citizen.js,
@noble/curves) passes the RFC 9497 VOPRF vectors in Chromium; a trip and carriage a case took are found and
another trip is not, from the browser and from `healthpsi cotravel check`; the service's transcript names no
trip; the API refuses malformed requests and caps checks per session; the live clock and countdown tick."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from playwright.sync_api import Page

from coordinator.cotravel import CotravelPaths, b64
from coordinator.risk import build_risk_set, load_health, load_scenario
from crypto import oprf
from proto import tokens as tk
from proto.layout import dataset_files
from service.routers.cotravel import DAILY_CAP
from tests.servers import ServiceProcess

TESTDATA = next(
    p / "shared" / "testdata"
    for p in Path(__file__).resolve().parents
    if (p / "shared" / "testdata").is_dir()
)
VECTORS = TESTDATA / "rfc9497" / "ristretto255-SHA512.json"


@dataclass(frozen=True)
class Trips:
    """A trip and carriage a case took, a carriage of that trip no case sat in, and a trip no case took."""

    case_trip: str
    case_day: str
    case_carriage: int
    other_carriage: int
    clean_trip: str
    clean_day: str


@pytest.fixture(scope="module")
def trips(service_run: Path) -> Trips:
    """The manifests `healthpsi run` published, unchanged by `healthpsi cotravel publish` (same day keys, same
    tags); and the trips to check."""
    published = {p.name: p.read_bytes() for p in CotravelPaths(service_run).manifests()}
    assert len(published) == load_scenario(service_run).window_days
    proc = subprocess.run(
        [sys.executable, "-m", "healthpsi.cli", "cotravel", "publish", "--run", str(service_run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_bytes() for p in CotravelPaths(service_run).manifests()} == published
    scenario = load_scenario(service_run)
    risk = set(build_risk_set(load_health(service_run), scenario.as_of, scenario.window_days).rows["token"])
    carriages = sorted(t for t in risk if t.startswith("carriage|"))
    assert carriages, "the run's cases took no train"
    _, trip, day, carriage = carriages[0].split("|")
    files = dataset_files(service_run / "data" / "transport", "tickets", scenario.as_of)
    tickets = pd.concat([pd.read_parquet(f.path) for f in files], ignore_index=True)
    first, last = scenario.as_of - dt.timedelta(days=scenario.window_days - 1), scenario.as_of
    clean = [
        (str(r.trip_id), r.service_date.isoformat())
        for r in tickets.itertuples()
        if first <= r.service_date <= last and tk.trip(str(r.trip_id), r.service_date) not in risk
    ]
    assert clean, "every ticket of the window is a case's trip"
    taken = {int(t.split("|")[3]) for t in carriages if t.split("|")[1:3] == [trip, day]}
    other = next(n for n in range(1, 100) if n not in taken)
    return Trips(trip, day, int(carriage), other, *clean[0])


def transcript(service: ServiceProcess, run: Path) -> str:
    """Everything the service wrote: its log and every file under RUN/service/."""
    files = [p for p in (run / "service").rglob("*") if p.is_file()]
    return service.log() + "".join(p.read_bytes().decode("latin-1") for p in files)


def test_browser_voprf_client_passes_the_rfc9497_vectors(page: Page, service: ServiceProcess) -> None:
    suites = json.loads(VECTORS.read_text())
    voprf = next(s for s in suites if s["mode"] == 1)
    page.goto(f"{service.url}/cotravel")
    outputs = page.evaluate(
        """(suite) => {
          const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
          const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
          const order = (1n << 252n) + 27742317777372353535851937790883648493n;
          // @noble/curves draws a blind as (x mod (n - 1)) + 1 from 48 little-endian bytes x:
          // feed it blind - 1
          const fixed = (blind) => () => {
            let x = 0n;
            hex(blind).reverse().forEach((b) => { x = (x << 8n) | BigInt(b); });
            x = (x - 1n + order) % order;
            const out = new Uint8Array(48);
            for (let i = 0; i < 48; i++) { out[i] = Number(x & 255n); x >>= 8n; }
            return out;
          };
          const api = window.healthpsiCitizen;
          return suite.vectors.map((v) => {
            const inputs = v.Input.split(',').map(hex);
            const blinds = v.Blind.split(',');
            const evaluated = v.EvaluationElement.split(',').map(hex);
            const items = inputs.map((input, i) => {
              const { blind, blinded } = api.blind(input, fixed(blinds[i]));
              return { input, blind, blinded, evaluated: evaluated[i] };
            });
            const outs = api.finalizeBatch(items, hex(suite.pkSm), hex(v.Proof.proof));
            const blinded = items.map((i) => toHex(i.blinded)).join(',');
            return { blinded, output: outs.map(toHex).join(',') };
          });
        }""",
        voprf,
    )
    assert outputs == [{"blinded": v["BlindedElement"], "output": v["Output"]} for v in voprf["vectors"]]
    tampered = page.evaluate(
        """(suite) => {
          const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
          const v = suite.vectors[0];
          const proof = hex(v.Proof.proof); proof[0] ^= 1;
          const input = hex(v.Input);
          const { blind, blinded } = window.healthpsiCitizen.blind(input);
          try {
            window.healthpsiCitizen.finalizeBatch(
              [{ input, blind, blinded, evaluated: hex(v.EvaluationElement) }], hex(suite.pkSm), proof);
            return 'accepted';
          } catch (err) { return 'refused'; }
        }""",
        voprf,
    )
    assert tampered == "refused"


def check_in_browser(page: Page, trip: str, day: str, carriage: int | None) -> tuple[str, str]:
    """Fill the co-travel form; the result's (found, carriage) attributes."""
    page.fill("#cotravel-trip", trip)
    page.fill("#cotravel-date", day)
    page.fill("#cotravel-carriage", "" if carriage is None else str(carriage))
    page.click("#cotravel-form button[type=submit]")
    page.wait_for_selector("#cotravel-result[data-state=done]", timeout=30_000)
    found = page.get_attribute("#cotravel-result", "data-found") or ""
    assert found, page.inner_text("#cotravel-result")
    return found, page.get_attribute("#cotravel-result", "data-carriage") or ""


def test_browser_finds_a_case_trip_and_not_another_and_the_service_learns_neither(
    page: Page,
    service: ServiceProcess,
    service_run: Path,
    trips: Trips,
    screenshot: Callable[[Page, str], Path],
) -> None:
    page.goto(f"{service.url}/cotravel?lang=en")
    assert check_in_browser(page, trips.case_trip, trips.case_day, trips.case_carriage) == ("true", "true")
    screenshot(page, "cotravel-found-carriage")
    assert check_in_browser(page, trips.case_trip, trips.case_day, trips.other_carriage) == ("true", "false")
    assert check_in_browser(page, trips.clean_trip, trips.clean_day, None) == ("false", "null")
    screenshot(page, "cotravel-not-found")
    seen = transcript(service, service_run)
    for trip in {trips.case_trip, trips.clean_trip}:
        assert trip not in seen
    assert "trip|" not in seen and "carriage|" not in seen


def cli_check(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`healthpsi cotravel check --service URL ARGS`."""
    return subprocess.run(
        [sys.executable, "-m", "healthpsi.cli", "cotravel", "check", "--service", service.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_finds_a_case_trip_and_not_another(
    service: ServiceProcess, service_run: Path, trips: Trips
) -> None:
    found = cli_check(
        service, "--trip", trips.case_trip, "--date", trips.case_day, "--carriage", str(trips.case_carriage)
    )
    assert found.returncode == 1, found.stderr
    assert "in your carriage" in found.stdout
    on_trip = cli_check(
        service, "--trip", trips.case_trip, "--date", trips.case_day, "--carriage", str(trips.other_carriage)
    )
    assert on_trip.returncode == 1 and "on your trip" in on_trip.stdout
    clean = cli_check(service, "--trip", trips.clean_trip, "--date", trips.clean_day)
    assert clean.returncode == 0 and "not found" in clean.stdout, clean.stderr
    outside = cli_check(service, "--trip", trips.clean_trip, "--date", "2019-01-01")
    assert outside.returncode == 2 and "outside the published days" in outside.stderr
    bad = cli_check(service, "--trip", "G1|x", "--date", trips.clean_day)
    assert bad.returncode == 2 and "--trip" in bad.stderr
    seen = transcript(service, service_run)
    assert trips.case_trip not in seen and trips.clean_trip not in seen


def blinded_request(run: Path) -> dict[str, list[str]]:
    """A well-formed evaluation request: two blinded random tokens for every published day."""
    days = [p.stem for p in CotravelPaths(run).manifests()]
    return {d: [b64(oprf.blind(f"t{i}".encode(), oprf.Mode.VOPRF)[1]) for i in range(2)] for d in days}


def test_evaluation_api_validates_requests_and_caps_each_session(
    service: ServiceProcess, service_run: Path, trips: Trips
) -> None:
    request = blinded_request(service_run)
    with httpx.Client(base_url=service.url, timeout=60) as client:
        one_day = dict(list(request.items())[:1])
        missing = client.post("/api/v1/cotravel/evaluate", json={"blinded": one_day})
        assert missing.status_code == 422 and "every published day" in missing.json()["detail"]
        first_day = next(iter(request))
        identity = {**request, first_day: [b64(bytes(32)), request[first_day][1]]}
        bad = client.post("/api/v1/cotravel/evaluate", json={"blinded": identity})
        assert bad.status_code == 422 and "identity" in bad.json()["detail"]
        short = {**request, first_day: ["AAAA", request[first_day][1]]}
        assert client.post("/api/v1/cotravel/evaluate", json={"blinded": short}).status_code == 422
        for _ in range(DAILY_CAP):
            ok = client.post("/api/v1/cotravel/evaluate", json={"blinded": request})
            assert ok.status_code == 200, ok.text
            assert set(ok.json()["evaluations"]) == set(request)
        capped = client.post("/api/v1/cotravel/evaluate", json={"blinded": request})
        assert capped.status_code == 429 and "per session per day" in capped.json()["detail"]


def test_citizen_bundle_runs_live_clocks_and_validity_countdowns(page: Page, service: ServiceProcess) -> None:
    start = dt.datetime(2020, 2, 1, 9, 30, 0, tzinfo=dt.UTC)
    page.clock.install(time=start)
    page.goto(f"{service.url}/cotravel")
    expires = (start + dt.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    page.evaluate(
        """(expires) => {
          const clock = document.createElement('span'); clock.id = 'clock'; clock.dataset.clock = '';
          const left = document.createElement('span'); left.id = 'left'; left.dataset.expires = expires;
          document.body.append(clock, left);
        }""",
        expires,
    )
    page.clock.run_for(1000)
    first = page.inner_text("#clock")
    left = int(page.get_attribute("#left", "data-left") or -1)
    page.clock.run_for(5000)
    assert page.inner_text("#clock") != first
    assert int(page.get_attribute("#left", "data-left") or -1) == left - 5
    assert 7190 <= left <= 7200 and page.inner_text("#left").startswith("1:59:")
