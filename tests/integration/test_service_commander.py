"""The commander dashboard's APIs against a real `healthpsi serve` over a small simulated run: login
required, wrong passwords refused and rate-limited, argon2id hashes stored, and every count equal to a
direct query of the coordinator's files."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import argon2
import httpx
import pandas as pd
import pytest

from benchmarks.service import PROBES
from coordinator.service_log import SERVICE_LOG
from service.process import ServiceProcess
from simulation.presets import COUNTIES
from tests.servers import copy_run

OPERATOR = "chen.wei"
OPERATOR_PASSWORD = "a-long-test-passphrase-7"
APPEAL_ID = "A-test-0001"
SCANS = [
    ("gate-east", "2020-01-31", "green", 40),
    ("gate-east", "2020-01-31", "red", 2),
    ("gate-west", "2020-01-30", "invalid", 1),
]

APIS = (
    "summary",
    "counties",
    "change",
    "curve",
    "cases",
    "risk-regions",
    "cells",
    "refusals",
    "revocations",
    "appeals",
    "checkpoints",
)


@dataclass(frozen=True)
class ServedRun:
    """A run, its operator's credentials, and the URL of the service serving it."""

    run: Path
    url: str
    user: str = OPERATOR
    password: str = OPERATOR_PASSWORD


def _other_parties_files(run: Path) -> None:
    """What the citizen and verifier routers write: one open appeal, a few checkpoint scans."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        subject, code_id = db.execute(
            "SELECT subject_id, code_id FROM codes WHERE color = 'red' LIMIT 1"
        ).fetchone()
        db.execute(
            "CREATE TABLE IF NOT EXISTS appeals (appeal_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL, "
            "code_id TEXT, reason TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO appeals VALUES (?, ?, ?, ?, ?, 'open')",
            (APPEAL_ID, subject, code_id, "I was at home all week", "2020-02-01T08:00:00Z"),
        )
    with sqlite3.connect(run / "service" / "counts.sqlite") as db:
        db.execute(
            "CREATE TABLE scans (checkpoint TEXT, day TEXT, result TEXT, n INTEGER, "
            "PRIMARY KEY (checkpoint, day, result))"
        )
        db.executemany("INSERT INTO scans VALUES (?, ?, ?, ?)", SCANS)


@pytest.fixture(scope="module")
def served_run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRun]:
    """A copy of the session's small run (`healthpsi run --preset city-20k --seed 7 --persons 1500`), an
    operator added with `healthpsi operator add --password-stdin`, and `healthpsi serve` over it."""
    run = copy_run(run_template, tmp_path_factory.mktemp("commander") / "run")
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "healthpsi.cli",
            "operator",
            "add",
            "--run",
            str(run),
            "--user",
            OPERATOR,
            "--password-stdin",
        ],
        input=OPERATOR_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert add.returncode == 0, add.stderr
    _other_parties_files(run)
    service = ServiceProcess(run).wait_ready()
    try:
        yield ServedRun(run=run, url=service.url)
    finally:
        service.stop()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def login(
    served: ServedRun, password: str | None = None, user: str | None = None
) -> tuple[httpx.Client, int]:
    """A client that went through the login form; the status of the login POST."""
    client = httpx.Client(base_url=served.url, timeout=30)
    token = _csrf(client.get("/commander/login").text)
    response = client.post(
        "/commander/login",
        data={"csrf": token, "username": user or served.user, "password": password or served.password},
    )
    return client, response.status_code


@pytest.fixture(scope="module")
def operator(served_run: ServedRun) -> httpx.Client:
    client, status = login(served_run)
    assert status == 303
    return client


def direct_county_counts(run: Path, epoch: str) -> tuple[dict[tuple[str, str], int], int]:
    """{(county code or 'other', colour): codes} of `epoch` by a direct SQL query of codes.sqlite joined to
    the simulation's own county table (not the service's), and the epoch's number of codes."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("CREATE TEMP TABLE county (code TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO county VALUES (?, ?)", [(c.code, c.name) for c in COUNTIES])
        rows = db.execute(
            "SELECT coalesce(county.code, 'other'), codes.color, count(*) FROM codes "
            "LEFT JOIN county ON county.code = substr(codes.subject_id, 1, 6) "
            "WHERE codes.epoch = ? GROUP BY 1, 2",
            (epoch,),
        ).fetchall()
        total = db.execute("SELECT count(*) FROM codes WHERE epoch = ?", (epoch,)).fetchone()[0]
    return {(code, colour): n for code, colour, n in rows}, int(total)


def latest_epoch(run: Path) -> str:
    """The latest epoch's id, straight from codes.sqlite."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        return str(db.execute("SELECT epoch FROM epochs ORDER BY seq DESC LIMIT 1").fetchone()[0])


def test_operator_password_is_stored_as_an_argon2id_hash(served_run: ServedRun) -> None:
    with sqlite3.connect(served_run.run / "service" / "operators.sqlite") as db:
        rows = db.execute("SELECT user, hash FROM operators").fetchall()
    assert [user for user, _ in rows] == [served_run.user]
    stored = rows[0][1]
    assert stored.startswith("$argon2id$")
    assert served_run.password not in stored
    assert argon2.PasswordHasher().verify(stored, served_run.password)


@pytest.mark.parametrize("api", APIS)
def test_apis_refuse_without_a_login(served_run: ServedRun, api: str) -> None:
    response = httpx.get(f"{served_run.url}/api/v1/commander/{api}")
    assert response.status_code == 401
    assert "log in" in response.json()["detail"]


def test_the_dashboard_sends_an_anonymous_visitor_to_the_login_page(served_run: ServedRun) -> None:
    response = httpx.get(f"{served_run.url}/commander")
    assert response.status_code == 303
    assert response.headers["location"] == "/commander/login"


def test_a_wrong_password_is_refused(served_run: ServedRun) -> None:
    client, status = login(served_run, password="not-the-password")
    assert status == 401
    assert client.get("/api/v1/commander/counties").status_code == 401
    client, status = login(served_run, user="nobody", password="not-the-password")
    assert status == 401


def test_a_login_without_the_csrf_token_is_refused(served_run: ServedRun) -> None:
    client = httpx.Client(base_url=served_run.url)
    client.get("/commander/login")
    response = client.post(
        "/commander/login", data={"username": served_run.user, "password": served_run.password}
    )
    assert response.status_code == 403
    assert client.get("/api/v1/commander/counties").status_code == 401


def test_failed_logins_are_rate_limited_per_user(served_run: ServedRun) -> None:
    user = "locked.out"
    with sqlite3.connect(served_run.run / "service" / "operators.sqlite") as db:
        hash_ = argon2.PasswordHasher().hash("the-right-password")
        db.execute("INSERT INTO operators VALUES (?, ?, 0)", (user, hash_))
    statuses = [login(served_run, user=user, password=f"wrong-{i}")[1] for i in range(5)]
    assert statuses == [401] * 5
    client, status = login(served_run, user=user, password="the-right-password")
    assert status == 429
    assert client.get("/api/v1/commander/counties").status_code == 401


def test_logout_ends_the_session_on_the_server(served_run: ServedRun) -> None:
    client, status = login(served_run)
    assert status == 303
    stolen = dict(client.cookies)
    page = client.get("/commander")
    assert page.status_code == 200
    assert client.post("/commander/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    replay = httpx.get(f"{served_run.url}/api/v1/commander/counties", cookies=stolen)
    assert replay.status_code == 401


def test_counts_per_county_equal_a_direct_query(served_run: ServedRun, operator: httpx.Client) -> None:
    body = operator.get("/api/v1/commander/counties").json()
    epoch = latest_epoch(served_run.run)
    assert body["epoch"] == epoch
    expected, total = direct_county_counts(served_run.run, epoch)
    served = {
        (row["code"], colour): row[colour]
        for row in body["counties"]
        for colour in ("green", "yellow", "red")
    }
    assert {k: v for k, v in served.items() if v} == expected
    assert sum(row["total"] for row in body["counties"]) == total > 0
    names = {c.code: c.name for c in COUNTIES}
    assert {row["code"]: row["name_zh"] for row in body["counties"] if row["code"] in names} == names


def test_summary_and_change_agree_with_the_counts(served_run: ServedRun, operator: httpx.Client) -> None:
    counties = operator.get("/api/v1/commander/counties").json()["counties"]
    summary = operator.get("/api/v1/commander/summary").json()
    now = summary["change"]["now"]
    assert now == {c: sum(row[c] for row in counties) for c in ("green", "yellow", "red")}
    with sqlite3.connect(served_run.run / "coordinator" / "codes.sqlite") as db:
        epochs = db.execute("SELECT count(*) FROM epochs").fetchone()[0]
        refused = db.execute("SELECT count(*) FROM refusals").fetchone()[0]
    if epochs == 1:  # the first epoch is compared with nothing
        assert summary["change"]["previous"] is None
        assert summary["change"]["delta"] == now
    assert summary["refusals"] == refused
    assert summary["scans"] == sum(n for *_, n in SCANS)


def test_curve_cases_and_regions_come_from_the_health_files(
    served_run: ServedRun, operator: httpx.Client
) -> None:
    cases = pd.read_parquet(served_run.run / "health" / "cases.parquet")
    as_of = operator.get("/api/v1/commander/summary").json()["as_of"]
    known = cases[cases["report_date"].astype(str) <= as_of]
    curve = operator.get("/api/v1/commander/curve").json()
    assert sum(p["onset"] for p in curve) == sum(p["report"] for p in curve) == len(known)
    listed = operator.get("/api/v1/commander/cases").json()
    assert listed["total"] == len(known)
    assert {r["case_id"] for r in listed["rows"]} == set(known["case_id"])
    assert all("*" in r["subject"] for r in listed["rows"])  # ids are masked
    regions = operator.get("/api/v1/commander/risk-regions").json()
    assert {r["region_code"] for r in regions} <= set(
        pd.read_parquet(served_run.run / "health" / "risk_regions.parquet")["region_code"]
    )


def test_the_map_counts_matched_cell_hours_per_city_cell(
    served_run: ServedRun, operator: httpx.Client
) -> None:
    cells = operator.get("/api/v1/commander/cells").json()
    all_cells = pd.read_parquet(served_run.run / "data" / "carrier" / "cells.parquet")
    city = all_cells[all_cells["region_code"].isin({c.code for c in COUNTIES})]
    assert sorted(c["cell_id"] for c in cells) == sorted(city["cell_id"].tolist())
    tokens = set(pd.read_parquet(served_run.run / "coordinator" / "matches.parquet")["token"])
    hours = [t for t in tokens if t.startswith("cell-hour|") and int(t.split("|")[1]) in set(city["cell_id"])]
    assert sum(c["exposures"] for c in cells) == len(hours) > 0


def test_checkpoint_scans_are_summed_per_checkpoint(operator: httpx.Client) -> None:
    body = operator.get("/api/v1/commander/checkpoints").json()
    assert body["day"] == max(day for _, day, _, _ in SCANS)
    per = {row["checkpoint"]: row for row in body["rows"]}
    assert per["gate-east"]["by_result"] == {"green": 40, "red": 2}
    assert per["gate-east"]["today"] == 42
    assert per["gate-west"]["today"] == 0


def test_an_operator_decides_an_appeal_once(served_run: ServedRun, operator: httpx.Client) -> None:
    appeals = operator.get("/api/v1/commander/appeals").json()
    assert [a["appeal_id"] for a in appeals["rows"]] == [APPEAL_ID]
    csrf = _csrf(operator.get("/commander").text)
    bad = operator.post(f"/commander/appeals/{APPEAL_ID}", data={"csrf": csrf, "decision": "maybe"})
    assert bad.status_code == 400
    forged = operator.post(f"/commander/appeals/{APPEAL_ID}", data={"csrf": "forged", "decision": "upheld"})
    assert forged.status_code == 403
    done = operator.post(f"/commander/appeals/{APPEAL_ID}", data={"csrf": csrf, "decision": "upheld"})
    assert done.status_code == 303
    with sqlite3.connect(served_run.run / "coordinator" / "codes.sqlite") as db:
        status = db.execute("SELECT status FROM appeals WHERE appeal_id = ?", (APPEAL_ID,)).fetchone()[0]
    assert status == "upheld"
    entries = [json.loads(line) for line in (served_run.run / SERVICE_LOG).read_text().splitlines()]
    decided = [e["data"] for e in entries if e["kind"] == "appeal_decided"]
    assert decided == [{"epoch": "", "appeal_id": APPEAL_ID, "decision": "upheld", "operator": OPERATOR}]
    assert entries[-1]["kind"] == "head"  # a decision is signed at once
    again = operator.post(f"/commander/appeals/{APPEAL_ID}", data={"csrf": csrf, "decision": "rejected"})
    assert again.status_code == 404
    assert "already upheld" in again.text


def test_the_dashboard_page_has_no_inline_script_and_speaks_both_languages(operator: httpx.Client) -> None:
    zh = operator.get("/commander?lang=zh")
    assert "script-src 'self'" in zh.headers["content-security-policy"]
    assert "<script" not in zh.text
    assert 'http-equiv="refresh"' in zh.text
    assert "灵宝市" in zh.text and "各区县健康码" in zh.text
    en = operator.get("/commander?lang=en")
    assert "Lingbao" in en.text and "Codes by county" in en.text


def test_the_load_benchmark_reports_every_phase_and_endpoint(served_run: ServedRun) -> None:
    """`healthpsi bench service --quick` over the run: the JSON's shape and its invariants (no speeds)."""
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "healthpsi.cli",
            "bench",
            "service",
            "--run",
            str(served_run.run),
            "--quick",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    result = json.loads(bench.stdout)["service"]
    assert set(result) == {
        "settings",
        "cpus",
        "absent_routes",
        "citizens_signed_in",
        "phases",
        "code_fetch",
        "applications",
    }
    assert set(result["absent_routes"]) <= set(PROBES)
    baseline, peak = result["phases"]["baseline"], result["phases"]["peak"]
    assert set(baseline["endpoints"]) == {"GET /api/v1/health"}
    assert baseline["endpoints"]["GET /api/v1/health"]["requests"] > 0
    assert baseline["failures"] == 0
    # which endpoints a few-second peak reaches depends on the load of the machine: only that it made requests
    assert peak["requests"] > 0
    assert set(result["phases"]["codes"]["endpoints"]) == {"GET /api/v1/citizen/codes/[id]"}
    assert set(result["phases"]["applications"]["endpoints"]) == {"POST /api/v1/citizen/applications"}
    assert result["applications"]["served"] is True
    assert peak["requests"] == sum(e["requests"] for e in peak["endpoints"].values())
    for phase in (baseline, peak):
        for share in ("service_cpu_share", "locust_cpu_share", "other_cpu_share"):
            assert 0.0 <= phase[share] <= 1.0
        assert phase["service_rss_start_bytes"] > 0 and phase["service_rss_end_bytes"] > 0
        assert phase["service_rss_max_bytes"] >= phase["service_rss_end_bytes"]
        for endpoint in phase["endpoints"].values():
            # locust rounds its percentiles (to 10 ms above 100 ms): only their order is checked
            assert (
                endpoint["p50_ms"] is None or endpoint["p50_ms"] <= endpoint["p95_ms"] <= endpoint["p99_ms"]
            )
    assert result["code_fetch"]["served"] == ("GET /api/v1/citizen/codes/[id]" not in result["absent_routes"])
    # the benchmark's own operator is gone again
    with sqlite3.connect(served_run.run / "service" / "operators.sqlite") as db:
        assert not [u for (u,) in db.execute("SELECT user FROM operators") if u.startswith("bench-")]
