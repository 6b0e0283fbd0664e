"""The citizen APIs against a real `healthpsi serve` process over a small run, with a real police node
process checking identities over PSI: the flows, and the abuse cases."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from coordinator.policy import Policy
from tests.servers import (
    ServiceProcess,
    copy_run,
    outbox_code,
    republish_trust_list,
    unclaimed_people,
)


@pytest.fixture(scope="module")
def run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(run_template, tmp_path_factory.mktemp("citizen-api") / "run")


@pytest.fixture(scope="module")
def people(run: Path) -> Iterator[dict[str, str]]:
    """People of the register who hold no code yet, handed out one per call."""
    return iter(unclaimed_people(run, 60))


_phones = iter(range(13900000000, 13999999999))


def new_phone() -> str:
    return str(next(_phones))


def client(service: ServiceProcess, address: str = "10.0.0.1") -> httpx.Client:
    """A client seen by the service as coming from `address` (uvicorn trusts X-Forwarded-For from loopback,
    as behind a local reverse proxy)."""
    return httpx.Client(base_url=service.url, headers={"x-forwarded-for": address}, timeout=60)


def signed_in(
    service: ServiceProcess, run: Path, phone: str | None = None, address: str = "10.0.0.1"
) -> httpx.Client:
    phone = phone or new_phone()
    c = client(service, address)
    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    response = c.post("/api/v1/citizen/session", json={"phone": phone, "otp": outbox_code(run, phone)})
    assert response.status_code == 200, response.text
    return c


def application(person: dict[str, str], phone: str, relation: str = "self", **extra: Any) -> dict[str, Any]:
    return {"relation": relation, **person, "phone": phone, "symptoms": [], **extra}


def db(run: Path) -> sqlite3.Connection:
    return sqlite3.connect(run / "coordinator" / "codes.sqlite")


def police_requests(run: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(run / "nodes" / "police" / "state.sqlite") as node_db:
        return node_db.execute(
            "SELECT idempotency_key, count FROM requests "
            "WHERE partition_id = 'identity@static' ORDER BY rowid"
        ).fetchall()


def latest_epoch(run: Path) -> dict[str, Any]:
    with db(run) as conn:
        (result,) = conn.execute("SELECT result FROM epochs ORDER BY seq DESC LIMIT 1").fetchone()
    return dict(json.loads(result))


def verify(run: Path, payload: str, at: str) -> dict[str, Any]:
    republish_trust_list(run, at)
    cmd = [
        sys.executable,
        "-m",
        "healthpsi.cli",
        "verify",
        payload,
        "--trust",
        str(run / "pki" / "trustlist.json"),
    ]
    proc = subprocess.run([*cmd, "--at", at, "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


# ------------------------------------------------------------------------------------------- flows


def test_self_application_gets_a_verifiable_code_coloured_by_the_latest_epoch(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    phone = new_phone()
    c = signed_in(service, run, phone)
    person = next(people)
    before = police_requests(run)
    response = c.post("/api/v1/citizen/applications", json=application(person, phone, symptoms=["cough"]))
    assert response.status_code == 201, response.text
    issued = response.json()
    after = police_requests(run)
    assert [n for _, n in after[len(before) :]] == [1]  # one Evaluate call, charged one element

    view = c.get(f"/api/v1/citizen/codes/{issued['code_id']}").json()
    report = verify(run, view["payload"], view["issued_at"])
    assert report["valid"] is True
    with db(run) as conn:
        stored = conn.execute(
            "SELECT color, subject_id, epoch FROM codes WHERE code_id = ?", (issued["code_id"],)
        ).fetchone()
        app_row = conn.execute(
            "SELECT applicant_phone, relation, symptoms, status FROM applications WHERE code_id = ?",
            (issued["code_id"],),
        ).fetchone()
    assert stored == (issued["color"], person["subject_id"], latest_epoch(run)["epoch"])
    assert report["claims"]["hcp"]["c"] == stored[0] and report["claims"]["hcp"]["id"] == issued["code_id"]
    assert app_row == (phone, "self", '["cough"]', "issued")
    assert view["name"][0] == person["name"][0] and "*" in view["name"]
    assert view["subject_id"].endswith(person["subject_id"][-4:]) and "*" in view["subject_id"]


def test_colours_follow_the_epoch_features_under_the_policy(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    """Apply for people the epoch found exposed and people it did not; each colour is the policy's."""
    features = pq.read_table(run / "coordinator" / "features.parquet").to_pandas()
    epoch = latest_epoch(run)
    at = dt.date.fromisoformat(epoch["issued_at"][:10])
    expected = Policy.load().assess_frame(features, at).set_index("subject_id")
    exposed = set(expected.index[expected["color"] != "green"])
    free = [p for p in (next(people) for _ in range(20))]
    chosen = [p for p in free if p["subject_id"] in exposed][:2] + [
        p for p in free if p["subject_id"] not in exposed
    ][:1]
    assert len(chosen) == 3, "the run should hold exposed and unexposed people without a code"
    phone = new_phone()
    c = signed_in(service, run, phone)
    for person in chosen:
        got = c.post("/api/v1/citizen/applications", json=application(person, new_phone(), "family")).json()
        sid = person["subject_id"]
        want = expected.loc[sid, "color"] if sid in expected.index else "green"
        assert got["color"] == want
        if want != "green":
            assert got["reasons"] == list(expected.loc[sid, "reasons"])
            view = c.get(f"/api/v1/citizen/codes/{got['code_id']}").json()
            until = expected.loc[sid, "until"]
            assert view["green_from"] == (until + dt.timedelta(days=1)).isoformat()


def test_declared_symptoms_give_a_yellow_code_with_a_fever_clinic_referral(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    """Someone the epoch found unexposed who declares a fever is yellow by SYMPTOMS, from the epoch's issue
    day for the rule's days (an expired exposure does not come back with it); another unexposed person
    without symptoms stays green."""
    features = pq.read_table(run / "coordinator" / "features.parquet").to_pandas()
    epoch = latest_epoch(run)
    at = dt.date.fromisoformat(epoch["issued_at"][:10])
    colours = Policy.load().assess_frame(features, at).set_index("subject_id")["color"]
    candidates = [next(people) for _ in range(10)]
    unexposed = [p for p in candidates if colours.get(p["subject_id"], "green") == "green"]
    assert len(unexposed) >= 2, "the run should hold unexposed people without a code"
    (rule,) = [r for r in Policy.load().rules if r.reason == "SYMPTOMS"]
    c = signed_in(service, run)
    sick = c.post("/api/v1/citizen/applications",
                  json=application(unexposed[0], new_phone(), "family", symptoms=["fever", "cough"])).json()
    well = c.post("/api/v1/citizen/applications",
                  json=application(unexposed[1], new_phone(), "family")).json()
    assert (sick["color"], sick["reasons"]) == (rule.color, ["SYMPTOMS"])
    assert (well["color"], well["reasons"]) == ("green", [])
    view = c.get(f"/api/v1/citizen/codes/{sick['code_id']}").json()
    assert view["green_from"] == (at + dt.timedelta(days=rule.quarantine_days + 1)).isoformat()
    page = c.get(f"/citizen/codes/{sick['code_id']}", params={"lang": "zh"})
    assert page.status_code == 200 and "发热门诊" in page.text


def test_applications_arriving_together_share_evaluate_calls(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    phone = new_phone()
    c = signed_in(service, run, phone)
    cookies = dict(c.cookies)
    persons = [next(people) for _ in range(8)]
    before = police_requests(run)
    barrier = threading.Barrier(len(persons))
    statuses: list[int] = []

    def apply(person: dict[str, str]) -> None:
        with client(service) as mine:
            mine.cookies.update(cookies)
            barrier.wait()
            statuses.append(
                mine.post(
                    "/api/v1/citizen/applications", json=application(person, new_phone(), "family")
                ).status_code
            )

    threads = [threading.Thread(target=apply, args=(p,)) for p in persons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [201] * len(persons)
    new = police_requests(run)[len(before) :]
    assert sum(n for _, n in new) == len(persons)  # one budget element per application
    assert len(new) < len(persons)  # fewer Evaluate calls than applications


def test_a_refused_identity_is_told_why_and_recorded(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    phone = new_phone()
    c = signed_in(service, run, phone)
    person = next(people)
    wrong_name = {**person, "name": person["name"][0] + "某某"}
    response = c.post("/api/v1/citizen/applications", json=application(wrong_name, new_phone(), "family"))
    assert response.status_code == 422
    assert response.json()["reason"] == "NOT_IN_REGISTER"
    with db(run) as conn:
        refusal = conn.execute(
            "SELECT reason FROM refusals WHERE subject_id = ? AND epoch = ?",
            (person["subject_id"], latest_epoch(run)["epoch"]),
        ).fetchone()
        app_row = conn.execute(
            "SELECT status, reason, code_id FROM applications WHERE application_id = ?",
            (response.json()["application_id"],),
        ).fetchone()
        codes = conn.execute(
            "SELECT COUNT(*) FROM codes WHERE subject_id = ?", (person["subject_id"],)
        ).fetchone()
    assert refusal == ("NOT_IN_REGISTER",)
    assert app_row == ("refused", "NOT_IN_REGISTER", None)
    assert codes == (0,)


def test_an_appeal_is_stored_for_the_commander(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    phone = new_phone()
    c = signed_in(service, run, phone)
    code_id = c.post("/api/v1/citizen/applications", json=application(next(people), phone)).json()["code_id"]
    response = c.post(f"/api/v1/citizen/codes/{code_id}/appeals", json={"reason": "I stayed home all week."})
    assert response.status_code == 201, response.text
    appeal = response.json()
    with db(run) as conn:
        row = conn.execute(
            "SELECT subject_id, code_id, reason, status FROM appeals WHERE appeal_id = ?",
            (appeal["appeal_id"],),
        ).fetchone()
        subject = conn.execute("SELECT subject_id FROM codes WHERE code_id = ?", (code_id,)).fetchone()[0]
    assert row == (subject, code_id, "I stayed home all week.", "open")
    assert [a["appeal_id"] for a in c.get(f"/api/v1/citizen/codes/{code_id}/appeals").json()] == [
        appeal["appeal_id"]
    ]


# ------------------------------------------------------------------------------------------- abuse


def test_one_time_codes_are_single_use_and_refuse_wrong_and_expired_ones(
    run: Path, service: ServiceProcess
) -> None:
    phone = new_phone()
    c = client(service, "10.0.1.1")
    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    code = outbox_code(run, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    response = c.post("/api/v1/citizen/session", json={"phone": phone, "otp": wrong})
    assert (response.status_code, response.json()["detail"]["reason"]) == (401, "WRONG_CODE")
    assert c.post("/api/v1/citizen/session", json={"phone": phone, "otp": code}).status_code == 200
    reused = client(service, "10.0.1.1").post("/api/v1/citizen/session", json={"phone": phone, "otp": code})
    assert (reused.status_code, reused.json()["detail"]["reason"]) == (401, "NO_CODE")

    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    code = outbox_code(run, phone)
    with sqlite3.connect(run / "service" / "citizen.sqlite") as state:  # five minutes pass
        state.execute("UPDATE otp SET expires_at = expires_at - 301 WHERE phone = ?", (phone,))
    expired = client(service, "10.0.1.1").post("/api/v1/citizen/session", json={"phone": phone, "otp": code})
    assert (expired.status_code, expired.json()["detail"]["reason"]) == (401, "EXPIRED")


def test_too_many_wrong_codes_void_the_right_one(run: Path, service: ServiceProcess) -> None:
    phone = new_phone()
    c = client(service, "10.0.2.1")
    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    code = outbox_code(run, phone)
    wrong = f"{(int(code) + 7) % 1_000_000:06d}"
    reasons = [
        c.post("/api/v1/citizen/session", json={"phone": phone, "otp": wrong}).json()["detail"]["reason"]
        for _ in range(5)
    ]
    assert reasons == ["WRONG_CODE"] * 4 + ["TOO_MANY_TRIES"]
    assert c.post("/api/v1/citizen/session", json={"phone": phone, "otp": code}).status_code == 401


def test_one_time_codes_are_rate_limited_per_phone_and_per_address(
    run: Path, service: ServiceProcess
) -> None:
    phone = new_phone()
    statuses = [
        client(service, f"10.0.3.{i}").post("/api/v1/citizen/otp", json={"phone": phone}).status_code
        for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    limited = client(service, "10.0.3.9").post("/api/v1/citizen/otp", json={"phone": phone})
    assert limited.json()["detail"]["reason"] == "RATE_LIMITED" and int(limited.headers["retry-after"]) > 0

    c = client(service, "10.0.4.1")
    statuses = [c.post("/api/v1/citizen/otp", json={"phone": new_phone()}).status_code for _ in range(21)]
    assert statuses == [202] * 20 + [429]
    # another address is not held back by this one
    assert (
        client(service, "10.0.4.2").post("/api/v1/citizen/otp", json={"phone": new_phone()}).status_code
        == 202
    )


def test_oversized_bodies_are_refused_with_413(run: Path, service: ServiceProcess) -> None:
    c = signed_in(service, run)
    big = {"reason": "x" * (70 * 1024)}
    assert c.post("/api/v1/citizen/codes/abc/appeals", json=big).status_code == 413
    assert (
        client(service)
        .post(
            "/citizen/otp",
            content=b"phone=1" + b"0" * (70 * 1024),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        .status_code
        == 413
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"subject_id": "411202192901130761"}, "check character"),
        ({"birth_date": "1930-01-13"}, "birth_date"),
        ({"birth_date": "2999-01-01"}, "birth_date"),
        ({"relation": "friend"}, "relation"),
        ({"symptoms": ["sneezing"]}, "symptoms"),
        ({"name": ""}, "name"),
        ({"name": "张\x00三"}, "name"),
        ({"extra": "field"}, "extra"),
    ],
)
def test_malformed_applications_are_refused_with_a_reason_and_nothing_written(
    run: Path, service: ServiceProcess, change: dict[str, Any], field: str
) -> None:
    phone = new_phone()
    c = signed_in(service, run, phone, address="10.0.5.1")
    person = {"subject_id": "41120219290113076X", "name": "张德雅", "birth_date": "1929-01-13"}
    with db(run) as conn:
        before = conn.execute("SELECT COUNT(*) FROM applications").fetchone()
    response = c.post("/api/v1/citizen/applications", json={**application(person, phone, "family"), **change})
    assert response.status_code == 422
    assert field in json.dumps(response.json(), ensure_ascii=False)
    with db(run) as conn:
        assert conn.execute("SELECT COUNT(*) FROM applications").fetchone() == before


def test_applying_for_oneself_needs_the_signed_in_phone(run: Path, service: ServiceProcess) -> None:
    c = signed_in(service, run)
    person = {"subject_id": "41120219290113076X", "name": "张德雅", "birth_date": "1929-01-13"}
    response = c.post("/api/v1/citizen/applications", json=application(person, new_phone(), "self"))
    assert response.status_code == 422 and "phone" in response.json()["detail"]["message"]


def test_apis_refuse_without_a_session(run: Path, service: ServiceProcess) -> None:
    c = client(service)
    person = {"subject_id": "41120219290113076X", "name": "张德雅", "birth_date": "1929-01-13"}
    calls = [
        c.post("/api/v1/citizen/applications", json=application(person, new_phone())),
        c.get("/api/v1/citizen/codes"),
        c.get("/api/v1/citizen/codes/0123456789abcdef01234567"),
        c.post("/api/v1/citizen/codes/0123456789abcdef01234567/appeals", json={"reason": "not me at all"}),
    ]
    assert [r.status_code for r in calls] == [401] * 4
    assert {r.json()["detail"]["reason"] for r in calls} == {"NO_SESSION"}


def test_a_forged_session_cookie_is_no_session(run: Path, service: ServiceProcess) -> None:
    c = signed_in(service, run)
    cookie = c.cookies["healthpsi_session"]
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    other = client(service)
    other.cookies.set("healthpsi_session", forged)
    assert other.get("/api/v1/citizen/codes").status_code == 401


def test_session_cookie_is_signed_httponly_and_same_site_strict(run: Path, service: ServiceProcess) -> None:
    phone = new_phone()
    c = client(service, "10.0.6.1")
    c.post("/api/v1/citizen/otp", json={"phone": phone})
    response = c.post("/api/v1/citizen/session", json={"phone": phone, "otp": outbox_code(run, phone)})
    cookie = response.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie and "max-age=" in cookie


def test_forms_refuse_a_forged_or_missing_csrf_token(run: Path, service: ServiceProcess) -> None:
    c = signed_in(service, run)
    page = c.get("/citizen")
    assert page.status_code == 200 and 'name="csrf"' in page.text
    form = {
        "relation": "self",
        "name": "张德雅",
        "subject_id": "41120219290113076X",
        "birth_date": "1929-01-13",
    }
    with db(run) as conn:
        before = conn.execute("SELECT COUNT(*) FROM applications").fetchone()
    assert c.post("/citizen/apply", data={**form, "csrf": "forged-token"}).status_code == 403
    assert c.post("/citizen/apply", data=form).status_code == 403
    assert c.post("/citizen/otp", data={"phone": new_phone(), "csrf": "forged"}).status_code == 403
    with db(run) as conn:
        assert conn.execute("SELECT COUNT(*) FROM applications").fetchone() == before


def test_json_apis_refuse_form_encoded_bodies(run: Path, service: ServiceProcess) -> None:
    """A cross-site form cannot send JSON, so a JSON API never acts on a form post."""
    c = signed_in(service, run)
    response = c.post("/api/v1/citizen/otp", data={"phone": new_phone()})
    assert response.status_code == 422


def test_another_citizens_code_and_appeals_stay_private(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    first_phone = new_phone()
    first = signed_in(service, run, first_phone)
    code_id = first.post("/api/v1/citizen/applications", json=application(next(people), first_phone)).json()[
        "code_id"
    ]
    assert (
        first.post(
            f"/api/v1/citizen/codes/{code_id}/appeals", json={"reason": "please look again"}
        ).status_code
        == 201
    )

    second = signed_in(service, run, address="10.0.7.1")
    assert second.get(f"/api/v1/citizen/codes/{code_id}").status_code == 404
    assert second.get(f"/api/v1/citizen/codes/{code_id}/appeals").status_code == 404
    assert (
        second.post(f"/api/v1/citizen/codes/{code_id}/appeals", json={"reason": "hijack attempt"}).status_code
        == 404
    )
    assert code_id not in second.get("/api/v1/citizen/codes").text
    page = second.get(f"/citizen/codes/{code_id}")
    assert page.status_code == 404 and "please look again" not in page.text
    with db(run) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM appeals WHERE code_id = ?", (code_id,))]
    assert reasons == ["please look again"]


def test_an_unreachable_police_node_is_reported_within_seconds_and_nothing_is_written(
    run: Path, service: ServiceProcess, people: Iterator[dict[str, str]]
) -> None:
    """A service whose police node is down answers 503 naming the node; no application or code is stored."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    orphan = ServiceProcess(run, "--node", f"police=127.0.0.1:{dead}").wait_ready()
    try:
        phone = new_phone()
        c = httpx.Client(base_url=orphan.url, headers={"x-forwarded-for": "10.0.8.1"}, timeout=60)
        assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
        assert c.post(
            "/api/v1/citizen/session", json={"phone": phone, "otp": outbox_code(run, phone)}
        ).is_success
        person = next(people)
        response = c.post("/api/v1/citizen/applications", json=application(person, phone))
        assert response.status_code == 503
        assert "police" in response.json()["detail"]["message"] and response.headers["retry-after"]
    finally:
        orphan.stop()
    with db(run) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM applications WHERE subject_id = ?", (person["subject_id"],)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT COUNT(*) FROM codes WHERE subject_id = ?", (person["subject_id"],)
        ).fetchone() == (0,)


def test_access_log_holds_one_json_line_per_request_from_every_worker(run: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    logged = ServiceProcess(run, "--access-log", str(log), workers=2).wait_ready()
    try:
        with httpx.Client(base_url=logged.url, timeout=60) as c:
            statuses = [c.get(path).status_code for path in ("/api/v1/health", "/api/v1/citizen/codes") * 5]
    finally:
        assert logged.stop() == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    asked = [(e["path"], e["status"]) for e in lines if e["path"] != "/api/v1/health" or e["status"] != 200]
    assert statuses == [200, 401] * 5 and asked == [("/api/v1/citizen/codes", 401)] * 5
    assert all(set(e) == {"at", "method", "path", "status", "ms", "client"} for e in lines)
