"""The venue APIs and forms against a real `healthpsi serve` (two workers) over a small run, with a real
police node checking the visitors' identities: register a venue, its signed QR, check-ins into the venue
agency's journal (and nowhere in the coordinator's or the service's files), refusals, the gate count; and,
end to end, a check-in delivered to the venue node's data for its day."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from crypto import codes
from crypto.pki import ec_private_key, load_certificate
from nodes.store import AgencyStore
from proto import tokenize
from runctx.pki import PkiPaths
from runctx.scenario import Scenario
from service.venue.keys import PREFIX, Venue, VenueKey
from tests.servers import ServiceProcess, copy_run, outbox_code, served, unclaimed_people

COMPOUND = {"name": "建设路小区", "kind": "compound", "region_code": "411202", "x_km": 0.5, "y_km": 0.5}


@pytest.fixture(scope="module")
def run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(run_template, tmp_path_factory.mktemp("venue-api") / "run")


@pytest.fixture(scope="module")
def people(run: Path) -> Iterator[dict[str, str]]:
    return iter(unclaimed_people(run, 20))


_phones = iter(range(13700000000, 13799999999))


def visitor(service: ServiceProcess, run: Path, person: dict[str, str]) -> tuple[httpx.Client, str]:
    """A client signed in with a new phone, holding a code for `person`; the code id."""
    phone = str(next(_phones))
    c = httpx.Client(base_url=service.url, timeout=60)
    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    signed = c.post("/api/v1/citizen/session", json={"phone": phone, "otp": outbox_code(run, phone)})
    assert signed.status_code == 200, signed.text
    applied = c.post(
        "/api/v1/citizen/applications", json={"relation": "self", **person, "phone": phone, "symptoms": []}
    )
    assert applied.status_code == 201, applied.text
    return c, str(applied.json()["code_id"])


def register(service: ServiceProcess, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{service.url}/api/v1/venues", json={**COMPOUND, **fields}, timeout=60)
    assert response.status_code == 201, response.text
    return dict(response.json())


def journal(run: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(run / "venues" / "venues.sqlite") as db:
        return db.execute("SELECT subject_id, venue_id, at FROM checkins ORDER BY seq").fetchall()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


# ------------------------------------------------------------------------------------------- register


def test_a_registered_venue_gets_a_qr_signed_by_the_venue_agencys_root_certified_key(
    run: Path, service: ServiceProcess
) -> None:
    venue = register(service, address="建设路 1 号")
    assert re.fullmatch(r"compound-411202-v\d{4}", venue["venue_id"])
    certificate = load_certificate(PkiPaths(run).venue_signing_cert)
    certificate.verify_directly_issued_by(load_certificate(PkiPaths(run).root_cert))
    cose = codes.decode_cose(codes.b45decode(venue["qr_payload"].removeprefix(PREFIX)))
    codes.verify_signature(cose, certificate.public_key())  # raises unless the agency's key signed it
    assert codes.decode_claims(cose.payload)[2] == venue["venue_id"]
    page = httpx.get(f"{service.url}{venue['print_url']}")
    assert page.status_code == 200 and "<svg" in page.text and venue["qr_payload"] in page.text
    public = httpx.get(f"{service.url}/api/v1/venues/{venue['venue_id']}").json()
    assert public["name"] == "建设路小区" and "gate_key" not in public
    assert httpx.get(f"{service.url}/api/v1/venues/compound-411202-v9999").status_code == 404


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "castle"}, "kind"),
        ({"region_code": "999999"}, "not a county"),
        ({"x_km": None, "y_km": None}, "cell_id, or its position"),
        ({"x_km": None, "y_km": None, "cell_id": 123456789}, "no cell 123456789"),
        ({"name": "x"}, "name"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_registration_is_refused_naming_the_problem(
    service: ServiceProcess, fields: dict[str, Any], problem: str
) -> None:
    body = {k: v for k, v in {**COMPOUND, **fields}.items() if v is not None}
    response = httpx.post(f"{service.url}/api/v1/venues", json=body)
    assert response.status_code == 422
    assert problem in response.text


def test_the_registration_form_needs_its_csrf_token_and_names_a_bad_field(
    run: Path, service: ServiceProcess
) -> None:
    c = httpx.Client(base_url=service.url, timeout=60)
    form = {k: str(v) for k, v in COMPOUND.items()}
    before = (
        sqlite3.connect(run / "venues" / "venues.sqlite").execute("SELECT COUNT(*) FROM venues").fetchone()
    )
    assert c.post("/venue/register", data=form).status_code == 403
    assert c.post("/venue/register", data={**form, "csrf": "forged"}).status_code == 403
    after = (
        sqlite3.connect(run / "venues" / "venues.sqlite").execute("SELECT COUNT(*) FROM venues").fetchone()
    )
    assert after == before
    token = csrf_of(c.get("/venue").text)
    bad = c.post("/venue/register", data={**form, "csrf": token, "region_code": "411203", "cell_id": "-3"})
    assert bad.status_code == 422 and "cell_id" in bad.text
    good = c.post("/venue/register", data={**form, "csrf": token})
    assert good.status_code == 303 and good.headers["location"].endswith("/print")
    printed = c.get(good.headers["location"])
    assert 'id="gate-link"' in printed.text  # the operator who registered it sees its gate board link


# --------------------------------------------------------------------------------------------- check in


def test_a_check_in_lands_in_the_venue_agencys_journal_only_and_the_gate_counts_it(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    venue = register(service, name="湖滨菜市场", kind="market")
    gate = f"{service.url}/api/v1/venues/gate/{venue['gate_key']}"
    assert httpx.get(gate).json()["today"] == 0
    person = next(people)
    c, code_id = visitor(service, run, person)
    for _ in range(2):
        done = c.post("/api/v1/venues/checkins", json={"venue_qr": venue["qr_payload"], "code_id": code_id})
        assert done.status_code == 201, done.text
    body = done.json()
    assert body["venue_id"] == venue["venue_id"] and body["venue_name"] == "湖滨菜市场"
    at = dt.datetime.fromisoformat(body["at"])
    assert at.date() == Scenario.load(run).as_of  # the run's clock
    rows = [r for r in journal(run) if r[1] == venue["venue_id"]]
    assert rows == [(person["subject_id"], venue["venue_id"], body["at"])] * 2
    counts = httpx.get(gate).json()
    assert (counts["today"], counts["last_hour"]) == (2, 2)
    assert httpx.get(f"{service.url}/api/v1/venues/gate/not-the-key").status_code == 404
    gate_page = httpx.get(f"{service.url}/venue/gate/{venue['gate_key']}")
    assert 'data-count="2"' in gate_page.text and 'http-equiv="refresh"' in gate_page.text
    # the coordinator and the service never see it
    for directory in (run / "coordinator", run / "service"):
        for path in directory.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert venue["venue_id"].encode() not in data, path


def test_a_forged_or_altered_venue_qr_is_refused_with_the_reason(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    venue = register(service)
    c, code_id = visitor(service, run, next(people))
    before = len(journal(run))
    named = Venue(venue["venue_id"], venue["name"], venue["kind"], venue["region_code"])
    certificate = load_certificate(PkiPaths(run).venue_signing_cert)
    forged = VenueKey(ec_private_key(), certificate).sign(named, dt.datetime.now(dt.UTC))
    cose = codes.decode_cose(codes.b45decode(venue["qr_payload"].removeprefix(PREFIX)))
    other = cose.payload.replace(venue["venue_id"].encode(), b"market-411202-0001")
    altered = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, other, cose.signature)
    cases = {
        forged: "unknown-key",
        PREFIX + codes.b45encode(altered.encode()): "bad-signature",
        "HCP1:NOTAVENUE": "health-code",
        "hello": "not-a-venue-code",
    }
    for payload, reason in cases.items():
        refused = c.post("/api/v1/venues/checkins", json={"venue_qr": payload, "code_id": code_id})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["reason"] == reason
    assert len(journal(run)) == before
    # the citizen page's form says why, in the page's language
    token = csrf_of(c.get("/citizen?lang=en").text)
    page = c.post("/venue/checkin", data={"csrf": token, "code_id": code_id, "venue_qr": forged})
    assert page.status_code == 422 and "Not signed by the venue agency" in page.text


def test_check_in_needs_a_session_a_code_of_ones_own_and_the_csrf_token(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    venue = register(service)
    body = {"venue_qr": venue["qr_payload"], "code_id": "0" * 24}
    assert httpx.post(f"{service.url}/api/v1/venues/checkins", json=body).status_code == 401
    c, code_id = visitor(service, run, next(people))
    assert c.post("/api/v1/venues/checkins", json=body).status_code == 404
    assert c.post("/api/v1/venues/checkins", json={**body, "code_id": ""}).status_code == 422
    form = {"venue_qr": venue["qr_payload"], "code_id": code_id}
    before = len(journal(run))
    assert c.post("/venue/checkin", data=form).status_code == 403
    assert c.post("/venue/checkin", data={**form, "csrf": "forged"}).status_code == 403
    assert len(journal(run)) == before
    shown = c.post("/venue/checkin", data={**form, "csrf": csrf_of(c.get("/citizen").text)})
    assert shown.status_code == 201
    assert venue["name"] in shown.text and f'data-code-id="{code_id}"' in shown.text
    assert len(journal(run)) == before + 1


def test_the_commander_sees_check_ins_per_kind_and_nothing_more(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    hospital = register(service, name="湖滨医院", kind="hospital")
    c, code_id = visitor(service, run, next(people))
    done = c.post("/api/v1/venues/checkins", json={"venue_qr": hospital["qr_payload"], "code_id": code_id})
    assert done.status_code == 201
    password = "a-long-test-passphrase-9"
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
            "zhou.li",
            "--password-stdin",
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert add.returncode == 0, add.stderr
    chief = httpx.Client(base_url=service.url, timeout=60)
    assert chief.get("/api/v1/commander/venues").status_code == 401
    token = csrf_of(chief.get("/commander/login").text)
    login = chief.post("/commander/login", data={"csrf": token, "username": "zhou.li", "password": password})
    assert login.status_code == 303
    counts = chief.get("/api/v1/commander/venues").json()
    with sqlite3.connect(run / "venues" / "venues.sqlite") as db:
        direct = dict(
            db.execute(
                "SELECT v.kind, COUNT(*) FROM checkins JOIN venues v USING (venue_id) GROUP BY v.kind"
            ).fetchall()
        )
    assert {r["kind"]: r["total"] for r in counts["rows"]} == direct
    assert direct["hospital"] >= 1 and counts["total"] == sum(direct.values())
    assert set(counts) == {"day", "total", "rows"} and all(
        set(r) == {"kind", "today", "total"} for r in counts["rows"]
    )
    page = chief.get("/commander?lang=en").text
    assert 'id="venues"' in page and 'data-kind="hospital"' in page


# ------------------------------------------------------------------------------------------ end to end


def test_a_check_in_made_through_the_service_reaches_the_venue_nodes_data(
    run_template: Path, tmp_path: Path
) -> None:
    """After the service delivers (at its shutdown here; every minute while it runs), the venue node's store
    for the day holds the check-in's venue-hour token: a case in the same venue and hour would match."""
    run = copy_run(run_template, tmp_path / "run")
    as_of = Scenario.load(run).as_of
    with served(run) as (_, service):
        venue = register(service)
        c, code_id = visitor(service, run, unclaimed_people(run, 1)[0])
        done = c.post("/api/v1/venues/checkins", json={"venue_qr": venue["qr_payload"], "code_id": code_id})
        assert done.status_code == 201, done.text
    subject = journal(run)[-1][0]
    at = dt.datetime.fromisoformat(done.json()["at"])
    delivered = sorted((run / "data" / "venues" / "checkins" / f"day={as_of}").glob("*-service-*.parquet"))
    assert [p.name for p in delivered] == [f"{as_of}-service-1.parquet"]
    store = AgencyStore(run, "venues", as_of=as_of)
    assert store.unreadable == {}
    row = pd.DataFrame(
        {"subject_id": [subject], "venue_id": [venue["venue_id"]], "at": [at], "leave": [pd.NaT]}
    )
    expected = {
        (str(s), str(t))
        for s, t in tokenize.checkin_tokens(row)[["subject_id", "token"]].itertuples(index=False)
    }
    assert expected and all(t.startswith(f"venue-hour|{venue['venue_id']}|") for _, t in expected)
    tokens = {
        (str(s), str(t))
        for pid, frame in store.iter_partitions((as_of, as_of + dt.timedelta(days=1)))
        if pid.startswith("venue-hour")
        for s, t in frame.itertuples(index=False)
    }
    assert expected <= tokens
