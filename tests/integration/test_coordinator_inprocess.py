"""The coordinator's epoch over real node handlers in-process: matches equal the plaintext join, codes
verify (valid, tampered, expired, revoked), crashes and cut streams resume, budgets and proofs are enforced.

The run is a small hand-made city (three agencies, a few dozen people) so the module stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coordinator import matching
from coordinator.epoch import run_epoch
from coordinator.errors import BudgetError, MatchingError
from coordinator.openings import read_openings
from coordinator.sealing import storage_key
from coordinator.store import CodeStore
from coordinator.transport import InProcessTransport, NodeUnavailable
from crypto import codes
from crypto.auditlog import verify_file
from crypto.drbg import Drbg
from crypto.pki import load_revocations
from healthpsi import cli
from nodes.budget import BudgetPolicy
from nodes.startup import open_node
from proto import ids, tokenize
from proto import tokens as tk
from proto.healthpsi.v1 import node_pb2
from proto.risk import risk_tokens
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from runctx.pki import PkiPaths, create_pki, load_identities, load_pinned_trust_list
from runner.enrollment import enroll_nodes
from simulation.reference import reference_matches

from .conftest import copy_run

AS_OF = dt.date(2020, 2, 14)
PERSONS = 48
DAYS = 16  # two days before the 14-day window
AGENCIES = tk.AGENCIES
"""Every agency has a node; the hand-made run's venues hold no check-ins."""
WITH_DATA = ("carrier", "transport", "police")
"""The agencies whose hand-made data gives matches."""
CASES = {"c1": 0, "c2": 13, "c3": 30}
CELLS = 40


def subject(i: int) -> str:
    """The subject id of person i."""
    return ids.from_int(41010219800000000 + i * 7)


def day(n: int) -> dt.date:
    """Day n of the data (day 2 is the window's first)."""
    return AS_OF - dt.timedelta(days=DAYS - 1 - n)


def write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema) -> None:
    """Write a frame with an explicit schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


def agency_frames() -> dict[str, pd.DataFrame]:
    """The agencies' records: stays, cells, tickets, population, hotel stays (a few malformed rows)."""
    rng = np.random.default_rng(7)
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(CELLS, dtype=np.int32),
            "region_code": [f"R{c % 10}" for c in range(CELLS)],
            "x_km": np.zeros(CELLS, np.float32),
            "y_km": np.zeros(CELLS, np.float32),
        }
    )
    stays, tickets, hotels = [], [], []
    for d in range(DAYS):
        for i in range(PERSONS):
            start = dt.datetime.combine(
                day(d), dt.time(8 + int(rng.integers(0, 3)), int(rng.integers(0, 60)))
            )
            stays.append(
                (
                    subject(i),
                    int(rng.integers(0, CELLS)),
                    start,
                    start + dt.timedelta(minutes=int(rng.integers(20, 200))),
                )
            )
            if rng.random() < 0.3:
                trip = f"G{int(rng.integers(0, 3))}"
                tickets.append(
                    (
                        subject(i),
                        trip,
                        day(d),
                        int(rng.integers(1, 4)),
                        "1A",
                        "A",
                        "B",
                        start,
                        start + dt.timedelta(hours=1),
                    )
                )
    for i in range(0, PERSONS, 5):
        hotels.append((subject(i), f"H{i % 2}", f"10{i % 3}", day(3 + i % 11), 2))
    stays.append(("41010219800000001", 1, stays[0][2], stays[0][3]))  # bad check character
    stays.append((subject(1), 2, stays[0][3], stays[0][2]))  # end before start
    hotels.append((subject(2), "H0", "101", day(5), 0))  # no nights
    population = pd.DataFrame(
        {
            "subject_id": [subject(i) for i in range(PERSONS)],
            "name": [f"王{chr(0x4E00 + i)}明" for i in range(PERSONS)],
            "birth_date": [dt.date(1970, 1, 1) + dt.timedelta(days=211 * i) for i in range(PERSONS)],
            "household_id": [f"HH{i // 3}" for i in range(PERSONS)],
        }
    )
    return {
        "cells": cells,
        "stays": pd.DataFrame(stays, columns=["subject_id", "cell_id", "start", "end"]),
        "tickets": pd.DataFrame(
            tickets,
            columns=[
                "subject_id",
                "trip_id",
                "service_date",
                "carriage",
                "seat",
                "origin",
                "destination",
                "depart",
                "arrive",
            ],
        ),
        "population": population,
        "hotel_stays": pd.DataFrame(hotels, columns=["subject_id", "hotel_id", "room", "check_in", "nights"]),
    }


def own_tokens(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every (subject_id, token) recorded by the nodes, from the shared tokeniser (the plaintext side)."""
    stays, hotels = frames["stays"], frames["hotel_stays"]
    good_stays = stays[(stays["end"] > stays["start"]) & stays["subject_id"].map(ids.is_valid)]
    parts = [
        tokenize.stay_tokens(good_stays, frames["cells"]).assign(agency="carrier"),
        tokenize.ticket_tokens(frames["tickets"]).assign(agency="transport"),
        tokenize.hotel_tokens(hotels[hotels["nights"] >= 1]).assign(agency="police"),
        tokenize.population_tokens(frames["population"]).assign(agency="police"),
    ]
    return pd.concat(parts, ignore_index=True)


def write_health(run: Path, frames: dict[str, pd.DataFrame], cases: dict[str, int]) -> None:
    """Cases, their investigations (their own tokens in the window and a day before it), risk regions."""
    case_rows = pd.DataFrame(
        {
            "case_id": list(cases),
            "subject_id": [subject(i) for i in cases.values()],
            "status": ["suspected" if n % 2 else "confirmed" for n in range(len(cases))],
            "onset_date": [AS_OF - dt.timedelta(days=6)] * len(cases),
            "report_date": [AS_OF - dt.timedelta(days=4)] * len(cases),
        }
    )
    mine = own_tokens(frames)
    mine = mine[~mine["token"].str.startswith("identity|")]
    inv = []
    for case_id, i in cases.items():
        tokens = sorted(mine[mine["subject_id"] == subject(i)]["token"])
        inv += [(case_id, t) for t in tokens[::2]]
    health = run / "health"
    write_parquet(
        health / "cases.parquet",
        case_rows,
        pa.schema(
            [
                ("case_id", pa.string()),
                ("subject_id", pa.string()),
                ("status", pa.string()),
                ("onset_date", pa.date32()),
                ("report_date", pa.date32()),
            ]
        ),
    )
    write_parquet(
        health / "investigations.parquet",
        pd.DataFrame(inv, columns=["case_id", "token"]),
        pa.schema([("case_id", pa.string()), ("token", pa.string())]),
    )
    regions = pd.DataFrame(
        {
            "region_code": ["R1", "R2"],
            "level": ["high", "medium"],
            "from_date": [AS_OF - dt.timedelta(days=2), AS_OF - dt.timedelta(days=9)],
            "to_date": [AS_OF, AS_OF - dt.timedelta(days=8)],
        }
    )
    write_parquet(
        health / "risk_regions.parquet",
        regions,
        pa.schema(
            [
                ("region_code", pa.string()),
                ("level", pa.string()),
                ("from_date", pa.date32()),
                ("to_date", pa.date32()),
            ]
        ),
    )


def hand_made_applicants(
    population: pd.DataFrame, fraction: float = 0.9, false_every: int = 9
) -> pd.DataFrame:
    """Applicants of the hand-made city: a deterministic fraction of the population, every `false_every`-th
    with a wrong birth date, plus one malformed id."""
    chosen = population.iloc[[i for i in range(len(population)) if (i * 37) % 100 < fraction * 100]].copy()
    chosen = chosen.reset_index(drop=True)[["subject_id", "name", "birth_date"]]
    wrong = chosen.index % false_every == 4
    chosen.loc[wrong, "birth_date"] = [d + dt.timedelta(days=1) for d in chosen.loc[wrong, "birth_date"]]
    bad = pd.DataFrame(
        {"subject_id": ["41010219800000001"], "name": ["王假"], "birth_date": [dt.date(1980, 1, 1)]}
    )
    return pd.concat([chosen, bad], ignore_index=True)


def write_run(run: Path) -> dict[str, pd.DataFrame]:
    """scenario.json, PKI, agency data, health records and applicants."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "scenario.json").write_text(
        json.dumps(
            {
                "preset": "test",
                "seed": 7,
                "deterministic": True,
                "persons": PERSONS,
                "as_of": AS_OF.isoformat(),
                "window_days": 14,
            }
        )
    )
    create_pki(
        PkiPaths(run),
        rng=Drbg(b"healthpsi" + (7).to_bytes(8, "big")).child("pki"),
        now=dt.datetime(2020, 2, 14),
    )
    frames = agency_frames()
    data = run / "data"
    write_parquet(
        data / "carrier" / "cells.parquet",
        frames["cells"],
        pa.schema(
            [
                ("cell_id", pa.int32()),
                ("region_code", pa.string()),
                ("x_km", pa.float32()),
                ("y_km", pa.float32()),
            ]
        ),
    )
    write_parquet(data / "carrier" / "stays.parquet", frames["stays"], SCHEMAS["stays"])
    write_parquet(data / "transport" / "tickets.parquet", frames["tickets"], SCHEMAS["tickets"])
    # the contract's register without its phone column, which these hand-made identities do not use
    register = SCHEMAS["population"].remove(SCHEMAS["population"].get_field_index("phone"))
    write_parquet(data / "police" / "population.parquet", frames["population"], register)
    write_table(data / "police" / "declarations.parquet", SCHEMAS["declarations"].empty_table())
    write_table(data / "venues" / "checkins.parquet", SCHEMAS["checkins"].empty_table())
    write_parquet(data / "police" / "hotel_stays.parquet", frames["hotel_stays"], SCHEMAS["hotel_stays"])
    write_health(run, frames, CASES)
    write_parquet(
        run / "health" / "applicants.parquet",
        hand_made_applicants(frames["population"]),
        pa.schema([("subject_id", pa.string()), ("name", pa.string()), ("birth_date", pa.date32())]),
    )
    enroll_nodes(run, AGENCIES)  # after the applicants: the police operator declares them
    return frames


def plaintext_matches(run: Path, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The plaintext join of the risk set with every node's tokens (the oracle for this hand-made run)."""
    health = {
        n: pd.read_parquet(run / "health" / f"{n}.parquet")
        for n in ("cases", "investigations", "risk_regions")
    }
    risk = risk_tokens(health["investigations"], health["risk_regions"], health["cases"], AS_OF, 14)
    joined = risk.merge(own_tokens(frames), on=["token", "agency"])
    joined = joined[joined["subject_id"] != joined["case_subject_id"]]
    out = joined[["subject_id", "agency", "token", "case_id"]].drop_duplicates()
    return out.sort_values(["subject_id", "agency", "token", "case_id"], na_position="last").reset_index(
        drop=True
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """A hand-made run with node state built once (indexes), before any epoch."""
    run = tmp_path_factory.mktemp("coord") / "run"
    frames = write_run(run)
    for agency in AGENCIES:
        open_node(run, agency).close()
    return run, frames


@pytest.fixture
def run(base: tuple[Path, dict[str, pd.DataFrame]], tmp_path: Path) -> Path:
    """A fresh copy of the base run."""
    target = tmp_path / "run"
    shutil.copytree(base[0], target)
    return target


@pytest.fixture(scope="module")
def done(base: tuple[Path, dict[str, pd.DataFrame]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the base run after one complete epoch."""
    target = tmp_path_factory.mktemp("done") / "run"
    shutil.copytree(base[0], target)
    with in_process_nodes(target) as transports:
        run_epoch(target, transports)
    return target


class in_process_nodes:
    """In-process transports over freshly opened node handlers; closes them on exit."""

    def __init__(self, run: Path, **kwargs: Any) -> None:
        self.handlers = {a: open_node(run, a, **kwargs) for a in AGENCIES}

    def __enter__(self) -> dict[str, InProcessTransport]:
        return {a: InProcessTransport(h, a) for a, h in self.handlers.items()}

    def __exit__(self, *exc: object) -> None:
        for h in self.handlers.values():
            h.close()


def read_matches(run: Path) -> pd.DataFrame:
    """RUN/coordinator/matches.parquet as a frame with None for null case ids."""
    frame = pd.read_parquet(run / "coordinator" / "matches.parquet")
    frame["case_id"] = frame["case_id"].astype(object).where(frame["case_id"].notna(), None)
    return frame


@pytest.fixture(scope="module")
def simulated(city_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the integration suite's city (1,500 residents, seed 7) with its applicants, PKI and enrolled
    nodes, and its reference matches."""
    run = copy_run(city_run, tmp_path_factory.mktemp("sim") / "run")
    shutil.copytree(city_run / "health", run / "health")
    reference_matches(run)
    return run


# ------------------------------------------------------------------------------------------------ tests


def test_simulated_city_matches_the_reference_exactly(simulated: Path) -> None:
    with in_process_nodes(simulated) as transports:
        result = run_epoch(simulated, transports)
    got = pq.read_table(simulated / "coordinator" / "matches.parquet")
    expected = pq.read_table(simulated / "reference" / "matches.parquet")
    assert got.schema == expected.schema
    assert got.num_rows > 100 and got.equals(expected)
    assert result.accepted > 0 and result.codes_total == result.accepted
    assert result.accepted + sum(result.refused.values()) + result.duplicate_applications == result.applicants
    assert result.refused.get("NOT_IN_REGISTER", 0) > 0  # the simulation's false declarations


def test_matches_equal_the_plaintext_join(done: Path, base: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    expected = plaintext_matches(done, base[1])
    got = read_matches(done)
    assert len(expected) > 20
    assert set(expected["agency"]) == set(WITH_DATA)
    assert expected["case_id"].isna().any()  # region tokens present
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    table = pq.read_table(done / "coordinator" / "matches.parquet")
    assert [f.type for f in table.schema] == [pa.string()] * 4


def test_epoch_outputs_and_audit(done: Path) -> None:
    result = json.loads((done / "coordinator" / "epoch.json").read_text())
    assert result["matches"] == len(read_matches(done))
    assert result["accepted"] + sum(result["refused"].values()) == result["applicants"]
    assert result["refused"]["NOT_IN_REGISTER"] >= 3 and result["refused"]["BAD_ID"] == 1
    assert result["codes_total"] == result["accepted"] == result["codes_issued"]
    assert result["colours"]["red"] > 0 and result["colours"]["green"] > 0
    assert result["malformed"]["carrier"]["bad_subject_id"] == 1
    features = pd.read_parquet(done / "coordinator" / "features.parquet")
    assert set(features["subject_id"]) >= {subject(i) for i in CASES.values()}
    report = verify_file(done / "coordinator" / "audit.jsonl", load_identities(PkiPaths(done)).coordinator)
    assert report.ok
    kinds = [
        json.loads(line)["kind"] for line in (done / "coordinator" / "audit.jsonl").read_text().splitlines()
    ]
    assert kinds[0] == "epoch_started" and kinds[-1] == "head"
    assert {
        "risk_committed",
        "evaluate",
        "index_streamed",
        "matches_written",
        "codes_issued",
        "revocations",
    } <= set(kinds)
    openings = read_openings(done, storage_key(done))
    assert openings and all(o["answered"] for o in openings)
    assert {o["purpose"] for o in openings} == {"risk", "identity"}
    assert len(list((done / "coordinator" / "qr").glob("*.png"))) >= 3


def verify_cli(run: Path, payload_or_file: str | Path, at: str) -> tuple[int, dict[str, Any]]:
    """`healthpsi verify ... --json` against the run's trust and revocation lists: (exit code, report)."""
    paths = PkiPaths(run)
    source = ["--file", str(payload_or_file)] if isinstance(payload_or_file, Path) else [payload_or_file]
    args = [
        "verify",
        *source,
        "--trust",
        str(paths.trustlist),
        "--revocations",
        str(paths.revocations),
        "--at",
        at,
        "--json",
    ]
    result = CliRunner().invoke(cli.app, args)
    return result.exit_code, json.loads(result.stdout)


def tamper(payload: str, colour: str) -> str:
    """The payload with its colour claim changed and the original signature kept."""
    cose = codes.decode_payload(payload).cose
    claims = cbor2.loads(cose.payload)
    claims[codes.CLAIM_HCERT][codes.HCERT_ENTRY]["c"] = colour
    forged = codes.CoseSign1(
        cose.protected_bytes,
        cose.protected,
        cose.unprotected,
        cbor2.dumps(claims, canonical=True),
        cose.signature,
    )
    return codes.HCP_PREFIX + codes.b45encode(zlib.compress(forged.encode()))


def test_issued_codes_verify_valid_tampered_expired(done: Path) -> None:
    with CodeStore(done / "coordinator" / "codes.sqlite") as store:
        rows = list(store.codes())
    assert len({r.subject_id for r in rows}) == len(rows)
    sample = json.loads((done / "coordinator" / "qr" / "index.json").read_text())
    red = next(s for s in sample if s["color"] == "red")
    row = next(r for r in rows if r.code_id == red["code_id"])
    issued = dt.datetime.fromisoformat(row.issued_at.replace("Z", "+00:00"))
    at = (issued + dt.timedelta(hours=1)).isoformat()

    code, report = verify_cli(done, done / "coordinator" / "qr" / red["png"], at)
    assert code == 0 and report["valid"], report
    assert report["claims"]["hcp"]["id"] == row.code_id and report["claims"]["hcp"]["c"] == "red"
    assert report["claims"]["hcp"]["sid"] == row.subject_id[:3] + "*" * 11 + row.subject_id[-4:]
    assert "reasons" not in json.dumps(report["claims"])

    code, report = verify_cli(done, tamper(row.payload, "green"), at)
    assert code == 1 and not report["signature_ok"] and not report["valid"]

    code, report = verify_cli(done, row.payload, (issued + dt.timedelta(hours=25)).isoformat())
    assert code == 1 and report["signature_ok"] and not report["time_ok"] and "expire" in report["reason"]

    code, _ = verify_cli(done, row.payload[:-6], at)
    assert code == 2


def _declare_case(run: Path, case_id: str, person: int) -> None:
    """Add a new case (with its own tokens investigated) to the run's health records."""
    frames = agency_frames()
    write_health(run, frames, {**CASES, case_id: person})


def test_second_epoch_reuses_downloads_and_revokes_worse_codes(done: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(done, run)
    before = json.loads((run / "coordinator" / "epoch.json").read_text())
    _declare_case(run, "c4", 40)
    with in_process_nodes(run) as transports:
        result = run_epoch(run, transports)
    assert result.epoch != before["epoch"] and result.seq == 2
    # every index the first epoch fetched is reused; only the new case's own kinds and days are downloaded
    assert result.indexes_cached >= before["indexes_downloaded"] - 1
    assert result.indexes_downloaded < before["indexes_downloaded"] / 2
    assert result.reused_answers >= before["queried"]
    assert result.queried < before["queried"]
    assert result.revoked > 0
    paths = PkiPaths(run)
    revocations = load_revocations(paths.revocations, load_pinned_trust_list(paths))
    with CodeStore(run / "coordinator" / "codes.sqlite") as store:
        revoked = store.revocations()
        old = {r.code_id: r for r in store.codes(before["epoch"])}
        new = {r.subject_id: r for r in store.codes(result.epoch)}
    assert revoked and all(revocations.is_revoked(r.code_id) for r in revoked)
    for r in revoked:
        order = ["green", "yellow", "red"]
        assert order.index(new[r.subject_id].color) > order.index(old[r.code_id].color)
    payload = old[revoked[0].code_id].payload
    at = dt.datetime.fromisoformat(result.issued_at.replace("Z", "+00:00")) + dt.timedelta(hours=1)
    code, report = verify_cli(run, payload, at.isoformat())
    assert code == 1 and report["revoked"] and report["signature_ok"] and "revoked" in report["reason"]


class CrashAfter(Exception):
    """Raised by a transport wrapper to simulate a crash."""


class Flaky:
    """Wraps a transport: crash (or cut the stream) after a number of calls."""

    def __init__(
        self,
        inner: InProcessTransport,
        *,
        evaluate_calls: int | None = None,
        cut_after_chunks: int | None = None,
        tamper: bool = False,
    ) -> None:
        self.inner, self.agency, self.counter = inner, inner.agency, inner.counter
        self.evaluate_calls, self.cut_after_chunks, self.tamper = evaluate_calls, cut_after_chunks, tamper
        self.cuts = 0

    def get_manifest(self) -> Any:
        return self.inner.get_manifest()

    def evaluate(self, req: Any) -> Any:
        response = self.inner.evaluate(req)
        if self.evaluate_calls is not None:
            if self.evaluate_calls == 0:
                raise CrashAfter("crash after the node answered, before the answer is recorded")
            self.evaluate_calls -= 1
        if self.tamper:
            data = bytearray(response.evaluated_elements)
            data[:32] = response.evaluated_elements[32:64] if len(data) >= 64 else bytes(32)
            response.evaluated_elements = bytes(data)
        return response

    def stream_index(self, partition_id: str, offset: int, digest: bytes) -> Iterator[Any]:
        for n, chunk in enumerate(self.inner.stream_index(partition_id, offset, digest)):
            if self.cut_after_chunks is not None and n == self.cut_after_chunks and self.cuts < 3:
                self.cuts += 1
                raise NodeUnavailable("connection cut")
            yield chunk


def test_crash_mid_evaluate_resumes_to_the_same_results(run: Path, done: Path) -> None:
    with in_process_nodes(run) as transports:
        flaky = {a: Flaky(t, evaluate_calls=1) if a == "carrier" else t for a, t in transports.items()}
        with pytest.raises(CrashAfter):
            run_epoch(run, flaky)
    with in_process_nodes(run) as transports:
        result = run_epoch(run, transports)
    pd.testing.assert_frame_equal(read_matches(run), read_matches(done))
    with (
        CodeStore(run / "coordinator" / "codes.sqlite") as a,
        CodeStore(done / "coordinator" / "codes.sqlite") as b,
    ):
        assert [(r.code_id, r.payload) for r in a.codes()] == [(r.code_id, r.payload) for r in b.codes()]
    assert result.codes_total == result.accepted
    # the node charged each batch once: its budgets equal those after the uninterrupted epoch
    with in_process_nodes(run) as t1, in_process_nodes(done) as t2:
        left = {
            a: sorted((p.partition_id, p.budget_left) for p in _manifest(t).partitions) for a, t in t1.items()
        }
        assert left == {
            a: sorted((p.partition_id, p.budget_left) for p in _manifest(t).partitions) for a, t in t2.items()
        }
    # the resumed epoch's log verifies and holds each evaluation once, like the uninterrupted one
    log = run / "coordinator" / "audit.jsonl"
    assert verify_file(log, load_identities(PkiPaths(run)).coordinator).ok
    assert audit_kinds(log) == audit_kinds(done / "coordinator" / "audit.jsonl")


def audit_kinds(path: Path) -> list[tuple[str, str]]:
    """(kind, idempotency key or "") of every audit entry, sorted."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((e["kind"], e["data"].get("idempotency_key", "")) for e in entries)


def _manifest(transport: InProcessTransport) -> Any:
    """A node's manifest, parsed."""
    manifest = node_pb2.Manifest()
    manifest.ParseFromString(transport.get_manifest().manifest)
    return manifest


def test_cut_index_stream_resumes(run: Path, done: Path) -> None:
    with in_process_nodes(run) as transports:
        transports["carrier"].handlers.chunk_bytes = 64
        flaky = {a: Flaky(t, cut_after_chunks=2) if a == "carrier" else t for a, t in transports.items()}
        run_epoch(run, flaky)
        assert flaky["carrier"].cuts > 0
    pd.testing.assert_frame_equal(read_matches(run), read_matches(done))


def test_labels_opened_in_parts_give_the_same_matches(
    run: Path, done: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matching, "OPEN_PART", 3)
    with in_process_nodes(run) as transports:
        run_epoch(run, transports)
    pd.testing.assert_frame_equal(read_matches(run), read_matches(done))


def test_budget_is_checked_before_sending(run: Path) -> None:
    with in_process_nodes(run, budget=BudgetPolicy({"identity": 5})) as transports:
        with pytest.raises(BudgetError, match="identity@static"):
            run_epoch(run, transports)
        assert transports["police"].counter.sent < 1000  # only manifest requests went out
    audit = (run / "nodes" / "police" / "audit.jsonl").read_text()
    assert '"evaluate"' not in audit


def test_bad_proof_is_rejected(run: Path) -> None:
    with in_process_nodes(run) as transports:
        flaky = {a: Flaky(t, tamper=True) if a == "transport" else t for a, t in transports.items()}
        with pytest.raises(MatchingError, match="DLEQ proof"):
            run_epoch(run, flaky)
    # batches are checked while the next one is evaluated, but nothing of a rejected one is logged or kept
    entries = [json.loads(line) for line in (run / "coordinator" / "audit.jsonl").read_text().splitlines()]
    assert not [e for e in entries if e["kind"] == "evaluate" and e["data"]["agency"] == "transport"]
    openings = run / "coordinator" / "openings" / "transport"
    assert list(openings.rglob("*.query")) and not list(openings.rglob("*.answer"))


def test_cli_epoch_in_process_with_workers(run: Path, base: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    result = CliRunner().invoke(
        cli.app, ["coordinator", "epoch", "--run", str(run), "--in-process", "--workers", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["matches"] == len(plaintext_matches(run, base[1]))
    assert summary["codes_total"] == summary["accepted"] > 0
    pd.testing.assert_frame_equal(read_matches(run), plaintext_matches(run, base[1]), check_dtype=False)


def test_cli_rejects_bad_node_options(run: Path) -> None:
    bad = CliRunner().invoke(cli.app, ["coordinator", "epoch", "--run", str(run), "--node", "hospital=x:1"])
    assert bad.exit_code == 2 and "AGENCY=HOST:PORT" in bad.output
    none = CliRunner().invoke(cli.app, ["coordinator", "epoch", "--run", str(run)])
    assert none.exit_code == 2
