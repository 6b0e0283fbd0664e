"""The host app against a real `healthpsi serve --app host` process over a small run: declarations checked
against the police register land in the police agency's declarations dataset (and nowhere else), whole or
not at all, reach the police node's store as `place-day` tokens; and the abuse cases."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from nodes.store import AgencyStore
from proto import layout
from proto.schemas import SCHEMAS
from simulation.reference import compute_reference
from tests.servers import ServiceProcess, copy_run, outbox_code

TODAY = "2020-01-31"
"""The small run's date (its only epoch): deliveries are named after it, dates bounded around it."""


@pytest.fixture(scope="module")
def run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(run_template, tmp_path_factory.mktemp("host-api") / "run")


@pytest.fixture(scope="module")
def service(run: Path) -> Iterator[ServiceProcess]:
    """The host app alone, two workers; no node is needed (the police register is the app's own data)."""
    service = ServiceProcess(run, "--app", "host", workers=2).wait_ready()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def register(run: Path) -> pd.DataFrame:
    """The police population register, in subject-id order."""
    frame = pq.read_table(run / "data" / "police" / "population.parquet").to_pandas()
    return frame.dropna(subset=["name"]).sort_values("subject_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def hosts(register: pd.DataFrame) -> Iterator[pd.Series]:
    """Registered people with a phone, one host per call (from the end of the register)."""
    return (row for _, row in register[register["phone"].notna()].iloc[::-1].iterrows())


@pytest.fixture(scope="module")
def tenants(register: pd.DataFrame) -> Iterator[pd.Series]:
    """Registered people to declare, one per call."""
    return (row for _, row in register.iterrows())


_address = iter(range(1, 250))


def client(service: ServiceProcess) -> httpx.Client:
    """A client from its own address (uvicorn trusts X-Forwarded-For from loopback), so the one-time codes'
    per-address limit is not what a test meets."""
    return httpx.Client(
        base_url=service.url, headers={"x-forwarded-for": f"10.1.0.{next(_address)}"}, timeout=60
    )


def signed_in(service: ServiceProcess, run: Path, host: pd.Series) -> httpx.Client:
    c = client(service)
    assert c.post("/api/v1/host/otp", json={"phone": host["phone"]}).status_code == 202
    response = c.post(
        "/api/v1/host/session", json={"phone": host["phone"], "otp": outbox_code(run, host["phone"])}
    )
    assert response.status_code == 200, response.text
    assert response.json()["host"].endswith(host["subject_id"][-4:])
    return c


def person(
    row: pd.Series, role: str = "tenant", start: str = "2020-01-20", end: str = "2020-07-19"
) -> dict[str, str]:
    return {
        "subject_id": row["subject_id"],
        "name": row["name"],
        "role": role,
        "from_date": start,
        "to_date": end,
    }


def dwelling(register: pd.DataFrame, n: int) -> str:
    return f"dwelling-{sorted(set(register['household_id']))[n]}"


def deliveries(run: Path) -> dict[str, str]:
    """Every file of the police declarations dataset: path → digest."""
    root = run / "data" / "police" / "declarations"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file() and p.suffix != ".log"
    }


def detail(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    return dict(body["detail"])


# ------------------------------------------------------------------------------------------- flows


def test_a_declaration_lands_in_the_police_data_only_and_the_host_sees_it(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
) -> None:
    host = next(hosts)
    c = signed_in(service, run, host)
    coordinator_before = snapshot(run / "coordinator")
    before = deliveries(run)
    people = [next(tenants), next(tenants)]
    place = dwelling(register, 3)
    body = {
        "place_id": place,
        "people": [person(people[0]), person(people[1], start="2020-01-25", end="2021-01-24")],
    }
    response = c.post("/api/v1/host/declarations", json=body)
    assert response.status_code == 201, response.text
    done = response.json()
    assert (done["people"], done["delivered"]) == (2, TODAY)

    new = sorted(set(deliveries(run)) - set(before))
    assert len(new) == 1 and new[0].startswith(f"day=2020-01-20/{TODAY}-"), new
    path = run / "data" / "police" / "declarations" / new[0]
    assert done["file"] == str(path.relative_to(run))
    assert layout.delivery_date(path) == dt.date.fromisoformat(TODAY)
    table = pq.read_table(path)
    assert table.schema == SCHEMAS["declarations"]
    assert table.to_pylist() == [
        {
            "place_id": place,
            "subject_id": p["subject_id"],
            "role": "tenant",
            "from_date": dt.date.fromisoformat(b["from_date"]),
            "to_date": dt.date.fromisoformat(b["to_date"]),
            "declared_by": host["subject_id"],
        }
        for p, b in zip(people, body["people"], strict=True)
    ]
    # nothing of it in the coordinator's files (unchanged) or in the service's own state
    assert snapshot(run / "coordinator") == coordinator_before
    secrets = [place, *(p["subject_id"] for p in people), *(p["name"] for p in people)]
    for f in (run / "service").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"{f} holds {leaked}"
    assert not [f for f in path.parent.iterdir() if f.name.startswith(".")]  # no temporary file left

    listed = c.get("/api/v1/host/declarations").json()
    mine = [d for d in listed if d["place_id"] == place]
    assert sorted(d["subject_id"] for d in mine) == sorted(p["subject_id"] for p in people)
    assert all(d["delivered"] == TODAY for d in mine)
    other = signed_in(service, run, next(hosts))
    assert place not in {d["place_id"] for d in other.get("/api/v1/host/declarations").json()}


def test_a_delivered_declaration_reaches_the_police_nodes_store_as_place_day_tokens(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
) -> None:
    """The node's store as of the delivery date yields each declared day's `place-day` token for both people
    (what a case's investigation at that place and day would match); a store as of the day before does not."""
    c = signed_in(service, run, next(hosts))
    people = [next(tenants), next(tenants)]
    declared = set(pads.dataset(run / "data" / "police" / "declarations").to_table()["place_id"].to_pylist())
    place = next(
        p for p in (f"dwelling-{h}" for h in sorted(set(register["household_id"]))) if p not in declared
    )
    body = {"place_id": place, "people": [person(p, start="2020-01-28", end="2020-03-31") for p in people]}
    assert c.post("/api/v1/host/declarations", json=body).status_code == 201
    window = (dt.date(2020, 1, 27), dt.date.fromisoformat(TODAY))

    def place_days(as_of: dt.date) -> set[tuple[str, str]]:
        store = AgencyStore(run, "police", as_of)
        found: set[tuple[str, str]] = set()
        for pid, frame in store.iter_partitions(window):
            if pid.startswith("place-day@"):
                rows = frame[frame["token"].astype(str).str.startswith(f"place-day|{place}|")]
                found |= {(str(s), str(t)) for s, t in zip(rows["subject_id"], rows["token"], strict=True)}
        return found

    expected = {
        (p["subject_id"], f"place-day|{place}|2020-01-{day}")
        for p in people
        for day in ("28", "29", "30", "31")
    }
    assert place_days(dt.date.fromisoformat(TODAY)) == expected
    assert place_days(dt.date(2020, 1, 30)) == set()  # not delivered yet by then

    # a case investigated at that place on the 29th: the plaintext oracle matches both declared people, and
    # only them (no one else was declared there)
    investigations = run / "health" / "investigations.parquet"
    table = pq.read_table(investigations)
    case = str(pq.read_table(run / "health" / "cases.parquet")["case_id"][0])
    token = f"place-day|{place}|2020-01-29"
    extra = pa.table(
        {"case_id": [case], "token": [token], "recorded_on": [dt.date(2020, 1, 30)]}, table.schema
    )
    pq.write_table(pa.concat_tables([table, extra]), investigations)
    matches = compute_reference(run, as_of=dt.date.fromisoformat(TODAY)).matches
    found = matches[matches["token"] == token]
    assert sorted(zip(found["subject_id"], found["agency"], found["case_id"], strict=True)) == sorted(
        (p["subject_id"], "police", case) for p in people
    )


# ------------------------------------------------------------------------------------------ refusals


def test_a_wrong_name_is_refused_naming_its_row_and_nothing_is_written(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
) -> None:
    c = signed_in(service, run, next(hosts))
    people = [person(next(tenants)) for _ in range(5)]
    people[3] = {**people[3], "name": people[3]["name"][0] + "某某"}
    before = deliveries(run)
    response = c.post("/api/v1/host/declarations", json={"place_id": dwelling(register, 7), "people": people})
    assert response.status_code == 422
    problem = detail(response)
    assert problem["reason"] == "IDENTITY_MISMATCH" and problem["rows"] == [4]
    assert problem["message"].startswith(f"row 4: ID number {people[3]['subject_id']}")
    assert "row 1" not in problem["message"]
    assert deliveries(run) == before  # a form of 5 rows with 1 bad writes none
    assert not list((run / "data" / "police" / "declarations").rglob(".*"))


@pytest.mark.parametrize(
    ("change", "row", "words"),
    [
        ({"to_date": "2020-02-30"}, 2, "to_date"),
        ({"from_date": "31/01/2020"}, 2, "from_date"),
        ({"to_date": "2020-01-10"}, 2, "is before from_date"),
        ({"from_date": "2018-01-01", "to_date": "2018-06-01"}, 2, "from_date: must lie between 2019-01-30"),
        ({"to_date": "2030-01-01"}, 2, "to_date: at most"),
        ({"role": "landlord"}, 2, "role"),
        ({"role": "employee"}, 2, "a dwelling declares tenants"),
        ({"subject_id": "wrong check character"}, 2, "check character"),
    ],
)
def test_malformed_rows_get_a_clear_422_naming_the_row(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
    change: dict[str, str],
    row: int,
    words: str,
) -> None:
    c = signed_in(service, run, next(hosts))
    people = [person(next(tenants)), {**person(next(tenants)), **change}]
    if change.get("subject_id") == "wrong check character":
        sid = people[0]["subject_id"]
        people[1]["subject_id"] = sid[:-1] + ("1" if sid[-1] == "0" else "0")
    before = deliveries(run)
    response = c.post("/api/v1/host/declarations", json={"place_id": dwelling(register, 9), "people": people})
    assert response.status_code == 422, response.text
    problem = detail(response)
    assert problem["reason"] == "INVALID" and problem["rows"] == [row]
    assert problem["message"].startswith(f"row {row}: ") and words in problem["message"]
    assert deliveries(run) == before


def test_places_are_validated(
    run: Path, service: ServiceProcess, hosts: Iterator[pd.Series], tenants: Iterator[pd.Series]
) -> None:
    c = signed_in(service, run, next(hosts))
    tenant = person(next(tenants))
    before = deliveries(run)
    for place, status, reason in [
        ("flat 3, 5 Main Street", 422, "INVALID"),
        ("dwelling-411202-99", 422, "INVALID"),
        ("dwelling-411202-9999999", 422, "UNKNOWN_PLACE"),  # no such household in the register
    ]:
        response = c.post("/api/v1/host/declarations", json={"place_id": place, "people": [tenant]})
        assert response.status_code == status, (place, response.text)
        assert detail(response)["reason"] == reason and "place_id" in detail(response)["message"]
    staff = {**tenant, "role": "employee"}
    response = c.post("/api/v1/host/declarations", json={"place_id": "workplace-10018-3", "people": [tenant]})
    assert response.status_code == 422 and "a workplace declares employees" in detail(response)["message"]
    twice = {"place_id": "workplace-10018-3", "people": [staff, staff]}
    response = c.post("/api/v1/host/declarations", json=twice)
    assert response.status_code == 422 and detail(response)["message"].startswith(
        "row 2: subject_id: the same"
    )
    for bad in ([], "not a list"):
        assert (
            c.post(
                "/api/v1/host/declarations", json={"place_id": "workplace-10018-3", "people": bad}
            ).status_code
            == 422
        )
    assert (
        c.post(
            "/api/v1/host/declarations", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    # a cross-site form can post text/plain that parses as JSON: refused
    plain = json.dumps({"place_id": "workplace-10018-3", "people": [staff]}).encode()
    response = c.post("/api/v1/host/declarations", content=plain, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    schema = c.get("/openapi.json").json()["paths"]["/api/v1/host/declarations"]["post"]["requestBody"]
    people = schema["content"]["application/json"]["schema"]["properties"]["people"]
    assert set(people["items"]["properties"]) == {"subject_id", "name", "role", "from_date", "to_date"}
    assert deliveries(run) == before


def test_without_a_session_the_api_answers_401_and_the_form_refuses(
    run: Path, service: ServiceProcess, register: pd.DataFrame, tenants: Iterator[pd.Series]
) -> None:
    c = client(service)
    body = {"place_id": dwelling(register, 11), "people": [person(next(tenants))]}
    before = deliveries(run)
    assert c.post("/api/v1/host/declarations", json=body).status_code == 401
    assert c.get("/api/v1/host/declarations").status_code == 401
    assert c.delete("/api/v1/host/session").status_code == 401
    page = c.get("/host")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token is not None and 'id="declare-form"' not in page.text
    form = {"csrf": token.group(1), "place_id": body["place_id"], **body["people"][0]}
    assert c.post("/host/declare", data=form).status_code == 401
    assert deliveries(run) == before


def test_a_phone_nobody_registered_cannot_sign_in_as_a_host(
    run: Path, service: ServiceProcess, register: pd.DataFrame
) -> None:
    c = client(service)
    phone = "19912345678"
    assert phone not in set(register["phone"].dropna())
    assert c.post("/api/v1/host/otp", json={"phone": phone}).status_code == 202
    response = c.post("/api/v1/host/session", json={"phone": phone, "otp": outbox_code(run, phone)})
    assert response.status_code == 403 and detail(response)["reason"] == "NOT_REGISTERED"
    assert c.get("/api/v1/host/declarations").status_code == 401


def test_forms_refuse_a_forged_or_missing_csrf_token(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
) -> None:
    c = signed_in(service, run, next(hosts))
    page = c.get("/host")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token is not None and 'id="declare-form"' in page.text
    tenant = person(next(tenants))
    form = {"place_id": dwelling(register, 13), **tenant}
    before = deliveries(run)
    assert c.post("/host/declare", data=form).status_code == 403
    assert c.post("/host/declare", data={**form, "csrf": "forged-token"}).status_code == 403
    assert c.post("/host/signout", data={"csrf": "forged"}).status_code == 403
    assert c.post("/host/otp", data={"phone": "13900000001"}).status_code == 403
    assert deliveries(run) == before
    wrong = c.post(
        "/host/declare", data={**form, "name": "某某", "csrf": token.group(1)}, params={"lang": "zh"}
    )
    assert wrong.status_code == 422 and "第 1 行的身份证号与姓名同公安人口库不一致" in wrong.text
    assert 'class="person bad" id="row-1"' in wrong.text
    assert deliveries(run) == before
    accepted = c.post("/host/declare", data={**form, "csrf": token.group(1)})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/host?declared=1"
    assert len(set(deliveries(run)) - set(before)) == 1


def test_refused_declarations_are_rate_limited(
    run: Path,
    service: ServiceProcess,
    register: pd.DataFrame,
    hosts: Iterator[pd.Series],
    tenants: Iterator[pd.Series],
) -> None:
    """Ten refused declarations an hour at most: guessing names against the register is slow."""
    c = signed_in(service, run, next(hosts))
    good = person(next(tenants))
    wrong = {**good, "name": good["name"][0] + "某"}
    place = dwelling(register, 15)
    for _ in range(10):
        response = c.post("/api/v1/host/declarations", json={"place_id": place, "people": [wrong]})
        assert response.status_code == 422 and detail(response)["reason"] == "IDENTITY_MISMATCH"
    limited = c.post("/api/v1/host/declarations", json={"place_id": place, "people": [good]})
    assert limited.status_code == 429 and detail(limited)["reason"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) > 0
