"""`healthpsi audit replay`: a clean run replays clean and equals a fresh re-run byte for byte; each kind
of tampering — an edited, deleted or reordered entry, a forged head, a query with no case behind it, a
hidden query, an altered matches or codes file, a budget overrun, a lying opening — is detected and named.

The run is simulated once per module (`--persons 1500`, seed 11), its nodes built and its epoch run
in-process over `nodes.startup.open_node`; each test tampers with its own copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

import coordinator.epoch as coordinator_epoch
from audit.replay import replay
from audit.verdicts import ReplayReport, Verdict
from coordinator.epoch import epoch_dir, run_epoch
from coordinator.openings import Batch
from coordinator.results import frame_digest
from coordinator.risk import RiskSet, group_by_partition, load_scenario
from coordinator.sealing import read_sealed_json, write_sealed_json
from coordinator.transport import InProcessTransport
from crypto import codes
from crypto.auditlog import AuditLog
from crypto.pki import load_identity_key, load_storage_key, make_revocations
from healthpsi import cli
from nodes.budget import BudgetPolicy
from nodes.secrets import NodeSecrets
from nodes.startup import open_node
from proto import tokens as tk
from proto.errors import ResourceExhausted
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, init_keys, load_signing_key
from runner.enrollment import enroll_nodes
from simulation.scenario import simulate

PERSONS = 1500
SEED = 11  # a seed whose cases include declared tenants, so place-day tokens are queried
AGENCIES = tk.AGENCIES
COORDINATOR_LOG = Path("coordinator") / "audit.jsonl"

REVOCATIONS_ITEM = "pki/issuers/411200/revocations.json"
"""The home issuer's revocation list, as the auditor names it."""


def node_log(agency: str) -> Path:
    """A node's audit log, relative to RUN."""
    return Path("nodes") / agency / "audit.jsonl"


def build(run: Path) -> Path:
    """Simulate the city (with its applicants), make the PKI and build every node's indexes (no epoch)."""
    simulate("city-20k", SEED, run, persons=PERSONS)
    init_keys(run)
    enroll_nodes(run, AGENCIES)
    for agency in AGENCIES:
        open_node(run, agency).close()
    return run


def epoch(run: Path) -> Path:
    """Run the coordinator's epoch against in-process nodes."""
    handlers = {a: open_node(run, a) for a in AGENCIES}
    try:
        run_epoch(run, {a: InProcessTransport(h, a) for a, h in handlers.items()})
    finally:
        for h in handlers.values():
            h.close()
    return run


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated run with node indexes built, before any epoch."""
    return build(tmp_path_factory.mktemp("audit") / "base")


@pytest.fixture(scope="module")
def done(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the base run after one complete epoch."""
    target = tmp_path_factory.mktemp("audit") / "done"
    shutil.copytree(base, target)
    return epoch(target)


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh re-run of the same scenario from nothing, in another directory."""
    return epoch(build(tmp_path_factory.mktemp("audit") / "rerun"))


@pytest.fixture
def run(done: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run to tamper with."""
    return Path(shutil.copytree(done, tmp_path / "run"))


def lines(path: Path) -> list[str]:
    """A log's lines, without newlines."""
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, items: list[str]) -> None:
    """Write a log's lines back."""
    path.write_text("".join(line + "\n" for line in items), encoding="utf-8")


def entries(path: Path) -> list[dict[str, Any]]:
    """A log's entries."""
    return [json.loads(line) for line in lines(path)]


def canonical(entry: dict[str, Any]) -> str:
    """An entry in the log's canonical form."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def relog(path: Path, items: list[dict[str, Any]], key: Any) -> None:
    """Rewrite a log from entries as a dishonest owner of its signing key would: chain and heads re-made."""
    path.unlink()
    with AuditLog(path, fsync=False) as log:
        for entry in items:
            data = dict(entry["data"])
            if entry["kind"] == "head":
                log.sign_head(key, data.pop("epoch"), data)
            else:
                log.append(entry["kind"], data)


def index_of(items: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool], nth: int = 0) -> int:
    """The index of the nth entry that passes `test`."""
    return [k for k, e in enumerate(items) if test(e)][nth]


def failing(report: ReplayReport, section: str | None = None) -> list[Verdict]:
    """The failing verdicts (of one section)."""
    return [v for v in report.failures if section is None or v.section == section]


def verdict_at(report: ReplayReport, section: str, line: int) -> Verdict:
    """The verdict on one log line."""
    return next(v for v in report.verdicts if v.section == section and v.item.startswith(f"line {line} "))


# ------------------------------------------------------------------------------------------------- clean


def test_clean_run_replays_clean(done: Path) -> None:
    report = replay(done)
    assert report.ok, report.failures
    assert [v for v in report.verdicts if v.status == "warn"] == []
    sections = report.summary()
    assert {"inputs", "coordinator/audit.jsonl", "risk set", "openings", "budgets", "results"} <= set(
        sections
    )
    assert {f"nodes/{a}/audit.jsonl" for a in AGENCIES} <= set(sections)
    # one verdict per log entry, and one per head the witness holds (every head reached it)
    for section, path in [(str(COORDINATOR_LOG), COORDINATOR_LOG), *((str(node_log(a)), node_log(a))
                                                                   for a in AGENCIES)]:
        mine = [v for v in report.verdicts if v.section == section]
        heads = [e for e in entries(done / path) if e["kind"] == "head"]
        assert len([v for v in mine if v.item.startswith("line ")]) == len(lines(done / path))
        witnessed = [v for v in mine if v.kind == "witness"]
        assert heads and len(witnessed) == len(heads) and all(v.status == "ok" for v in witnessed)
    assert report.counts["tokens re-derived"] > 100 and report.unjustified == []
    purposes = {v.item.split("/")[2].split(" ")[0] for v in report.verdicts if v.section == "openings"}
    assert purposes == {"risk", "identity"}
    # every agency's queries were re-derived, the venues' check-ins and the police's declarations included
    opened = {tuple(v.item.split("/")[:2]) for v in report.verdicts if v.section == "openings"}
    assert {agency for agency, _ in opened} == set(AGENCIES)
    assert {pid.split("@")[0] for _, pid in opened} >= {"venue-hour", "place-day"}
    results = {v.item.split(" ")[0]: v for v in report.verdicts if v.section == "results"}
    day = f"epochs/{load_scenario(done).as_of.isoformat()}/"
    assert set(results) == {
        "matches.parquet", "features.parquet", "codes.sqlite", REVOCATIONS_ITEM, "qr/", "epoch.json",
        *(day + name for name in ("matches.parquet", "features.parquet", "epoch.json")),
    }
    assert all(v.status == "ok" for v in results.values())
    assert "every row from a queried, justified token" in results["matches.parquet"].reason
    coordinator = [e["kind"] for e in entries(done / COORDINATOR_LOG)]
    assert {"risk_committed", "identities_committed", "evaluate", "matches_written", "codes_issued"} <= set(
        coordinator
    )
    assert any(e["kind"] == "budget_set" for e in entries(done / node_log("carrier")))


def test_fresh_rerun_equals_the_run_byte_for_byte(done: Path, rerun: Path) -> None:
    report = replay(done, rerun_dir=rerun)
    assert report.ok, report.failures
    compared = {v.item: v for v in report.verdicts if v.section == "rerun"}
    assert {"scenario.json", "matches.parquet", "features.parquet", "codes.sqlite"} <= set(compared)
    assert {str(COORDINATOR_LOG), *(str(node_log(a)) for a in AGENCIES)} <= set(compared)
    assert all(v.status == "ok" for v in compared.values()), compared


# ------------------------------------------------------------------------------------------- log tampering


def test_edited_entry_is_named(run: Path) -> None:
    path = run / node_log("carrier")
    items = entries(path)
    k = index_of(items, lambda e: e["kind"] == "evaluate")
    items[k]["data"]["budget_left"] += 100
    raw = lines(path)
    raw[k] = canonical(items[k])
    write_lines(path, raw)
    report = replay(run)
    assert not report.ok
    verdict = verdict_at(report, "nodes/carrier/audit.jsonl", k + 1)
    assert verdict.status == "fail" and verdict.reason.startswith("edited")


def test_deleted_entry_is_named(run: Path) -> None:
    path = run / COORDINATOR_LOG
    raw = lines(path)
    k = index_of(entries(path), lambda e: e["kind"] == "evaluate", nth=1)
    deleted_seq = json.loads(raw[k])["seq"]
    del raw[k]
    write_lines(path, raw)
    report = replay(run)
    verdict = verdict_at(report, "coordinator/audit.jsonl", k + 1)
    assert verdict.status == "fail" and f"deleted: seq {deleted_seq} missing" in verdict.reason
    # the query whose entry went missing is named too
    assert any("coordinator's log has no evaluate entry" in v.reason for v in failing(report, "openings"))


def test_reordered_entry_is_named(run: Path) -> None:
    path = run / node_log("police")
    raw = lines(path)
    k = index_of(entries(path), lambda e: e["kind"] == "evaluate")
    raw[k], raw[k + 1] = raw[k + 1], raw[k]
    write_lines(path, raw)
    report = replay(run)
    reasons = [v.reason for v in failing(report, "nodes/police/audit.jsonl")]
    assert reasons and any(r.startswith("reordered") for r in reasons)


def test_forged_head_signature_is_named(run: Path) -> None:
    path = run / COORDINATOR_LOG
    raw = lines(path)
    head = json.loads(raw[-1])
    assert head["kind"] == "head"
    impostor = NodeSecrets.of(run, "carrier").load_identity()
    unsigned = {k: v for k, v in head.items() if k != "sig"}
    head["sig"] = impostor.sign(b"healthpsi audit head v1\n" + canonical(unsigned).encode()).hex()
    raw[-1] = canonical(head)
    write_lines(path, raw)
    report = replay(run)
    verdict = verdict_at(report, "coordinator/audit.jsonl", len(raw))
    assert verdict.status == "fail" and "head signature does not verify" in verdict.reason


# ------------------------------------------------------------------------------------- query tampering


def unjustified_cell_hour(run: Path, as_of: dt.date, investigated: set[str]) -> str:
    """A crowded cell-hour on the last day that no case investigation names ("everyone at the mosque")."""
    stays = pd.read_parquet(run / "data" / "carrier" / "stays")
    at_ten = stays[
        (stays["start"] <= pd.Timestamp(as_of) + pd.Timedelta(hours=10))
        & (stays["end"] >= pd.Timestamp(as_of) + pd.Timedelta(hours=11))
    ]
    for cell in at_ten["cell_id"].value_counts().index:
        token = tk.cell_hour(int(cell), dt.datetime.combine(as_of, dt.time(10)))
        if token not in investigated:
            return token
    raise AssertionError("every crowded cell was investigated")


def unjustified_venue_hour(run: Path, as_of: dt.date, investigated: set[str]) -> str:
    """The busiest venue-hour of the last day that no case investigation names ("everyone at the market")."""
    checkins = pd.read_parquet(run / "data" / "venues" / "checkins")
    checkins = checkins[checkins["at"].dt.date == as_of]
    hours = checkins.groupby(["venue_id", checkins["at"].dt.floor("h")]).size().sort_values(ascending=False)
    for venue, hour in hours.index:
        token = tk.venue_hour(str(venue), hour.to_pydatetime())
        if token not in investigated:
            return token
    raise AssertionError("every venue was investigated")


UNJUSTIFIED = {"carrier": unjustified_cell_hour, "venues": unjustified_venue_hour}


def unjustified_token(run: Path, agency: str) -> str:
    """A token of that agency, on the last day, that people hold and no case investigation names."""
    as_of = dt.date.fromisoformat(json.loads((run / "scenario.json").read_text())["as_of"])
    investigated = set(pd.read_parquet(run / "health" / "investigations.parquet")["token"])
    return UNJUSTIFIED[agency](run, as_of, investigated)


@pytest.mark.parametrize("agency", sorted(UNJUSTIFIED))
def test_query_with_no_case_behind_it_is_named(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agency: str
) -> None:
    """The coordinator slips a token no case justifies into its risk set and runs its own code path: the
    query is committed, blinded, evaluated, logged on both sides and answered — and named by the replay."""
    run = Path(shutil.copytree(base, tmp_path / "run"))
    token = unjustified_token(run, agency)
    honest = coordinator_epoch.build_risk_set

    def surveilling(*args: Any, **kwargs: Any) -> RiskSet:
        risk = honest(*args, **kwargs)
        parsed = tk.parse(token)
        extra = pd.DataFrame(
            [
                {
                    "token": token,
                    "case_id": None,
                    "case_subject_id": None,
                    "partition_id": parsed.partition_id,
                    "agency": agency,
                    "kind": parsed.kind,
                }
            ]
        )
        rows = pd.concat([risk.rows, extra], ignore_index=True)
        return RiskSet(rows=rows, partitions=group_by_partition(rows))

    monkeypatch.setattr(coordinator_epoch, "build_risk_set", surveilling)
    epoch(run)
    matches = pd.read_parquet(run / "coordinator" / "matches.parquet")
    assert (matches["token"] == token).any()  # the surveillance worked: people at that place were matched

    report = replay(run)
    assert not report.ok
    assert [u["token"] for u in report.unjustified] == [token]
    assert "no case investigation record or risk region names it" in report.unjustified[0]["reason"]
    named = [v for v in failing(report, "openings") if token in v.reason]
    assert len(named) == 1 and "query with no case behind it" in named[0].reason
    committed = [v for v in failing(report, "coordinator/audit.jsonl") if v.kind == "risk_committed"]
    assert len(committed) == 1 and "is not the risk set the health records give" in committed[0].reason
    results = failing(report, "results")
    assert any(
        "not justified by their case or a risk region" in v.reason and token in v.reason for v in results
    )


def test_hidden_query_is_named(run: Path) -> None:
    """A query whose opening the coordinator withholds: the node's log names it."""
    query = sorted((run / "coordinator" / "openings" / "carrier").glob("*/*.query"))[0]
    key = query.stem
    query.unlink()
    query.with_suffix(".answer").unlink()
    report = replay(run)
    node = [v for v in failing(report, "nodes/carrier/audit.jsonl") if v.kind == "evaluate"]
    assert len(node) == 1 and "no opening" in node[0].reason
    coordinator = [v for v in failing(report, "coordinator/audit.jsonl") if v.kind == "evaluate"]
    assert len(coordinator) == 1 and "no opening for this query" in coordinator[0].reason
    assert key in json.dumps([e["data"] for e in entries(run / COORDINATOR_LOG) if e["kind"] == "evaluate"])


def test_opening_that_does_not_rederive_is_named(run: Path) -> None:
    """An opening resealed with another blind for its first token no longer re-derives its blinded input."""
    storage = load_storage_key(PkiPaths(run).coordinator_storage_key)
    query = sorted((run / "coordinator" / "openings" / "transport").glob("*/*.query"))[0]
    record = read_sealed_json(storage, query)
    blinds = base64.b64decode(record["blinds"])
    record["blinds"] = base64.b64encode(b"\x01" + bytes(31) + blinds[32:]).decode()  # the scalar 1
    write_sealed_json(storage, query, record)
    report = replay(run)
    named = [v for v in failing(report, "openings") if v.item.startswith("transport/")]
    assert len(named) == 1 and "do not re-derive" in named[0].reason


def test_retries_and_refusals_keep_the_budget_consistent(run: Path) -> None:
    """A retried query is answered from the node's store uncharged, an over-budget one refused: both logged,
    and the budget bookkeeping still holds."""
    storage = load_storage_key(PkiPaths(run).coordinator_storage_key)
    query = sorted((run / "coordinator" / "openings" / "transport").glob("*/*.query"))[0]
    batch = Batch.from_records(read_sealed_json(storage, query), None)
    cap = BudgetPolicy.parse([f"{batch.partition_id}={len(batch.tokens)}"])  # the cap is now used up
    handlers = open_node(run, "transport", budget=cap)
    try:
        assert handlers.evaluate(batch.request()).inputs_digest == batch.inputs_digest
        extra = node_pb2.EvaluateRequest(
            partition_id=batch.partition_id,
            blinded_elements=batch.blinded[:32],
            verifiable=True,
            idempotency_key="another",
        )
        with pytest.raises(ResourceExhausted):
            handlers.evaluate(extra)
    finally:
        handlers.close()
    report = replay(run)
    assert report.ok, report.failures
    reasons = [v.reason for v in report.verdicts if v.section == "nodes/transport/audit.jsonl"]
    assert any("retry answered from the stored response" in r for r in reasons)
    assert any(r.startswith("refused (RESOURCE_EXHAUSTED)") for r in reasons)
    assert any(f"cap {len(batch.tokens)} elements" in r for r in reasons)


# ------------------------------------------------------------------------------------ results tampering


def test_altered_matches_file_is_named(run: Path) -> None:
    path = run / "coordinator" / "matches.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)  # one match quietly dropped
    report = replay(run)
    named = failing(report, "results")
    assert len(named) == 1 and named[0].item == "matches.parquet" and named[0].reason.startswith("altered")


def test_altered_codes_are_named(run: Path) -> None:
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute(
            "UPDATE codes SET color = 'green' WHERE code_id = (SELECT MIN(code_id) FROM codes "
            "WHERE color != 'green')"
        )
    report = replay(run)
    named = failing(report, "results")
    assert len(named) == 1 and named[0].item.startswith("codes.sqlite") and "altered" in named[0].reason


def only_failure(report: ReplayReport, section: str) -> Verdict:
    """The one failing verdict of a report, which must lie in `section`."""
    assert [v.section for v in report.failures] == [section], report.failures
    return report.failures[0]


def red_code(run: Path) -> tuple[str, str]:
    """(code_id, payload) of the first red code."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        row = db.execute("SELECT code_id, payload FROM codes WHERE color = 'red' ORDER BY code_id").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


@pytest.mark.parametrize("log", [str(COORDINATOR_LOG), str(node_log("transport"))])
def test_cut_tail_with_its_last_head_is_named(run: Path, log: str) -> None:
    path = run / log
    raw = lines(path)
    last_head = max(k for k, e in enumerate(entries(path)) if e["kind"] == "head")
    write_lines(path, raw[: last_head - 1])  # the last signed head and the entry before it cut off
    report = replay(run)
    cut = [v for v in failing(report, log) if v.kind == "witness"]
    assert len(cut) == 1 and cut[0].reason.startswith("tail cut") and f"seq {last_head}" in cut[0].reason


def test_cut_tail_and_a_red_code_made_green_are_both_named(run: Path) -> None:
    path = run / COORDINATOR_LOG
    write_lines(path, lines(path)[:-3])
    code, _ = red_code(run)
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE codes SET color = 'green' WHERE code_id = ?", (code,))
    report = replay(run)
    assert any(v.reason.startswith("tail cut") for v in failing(report, str(COORDINATOR_LOG)))
    assert any(v.item.startswith("codes.sqlite") for v in failing(report, "results"))


def test_swapped_code_payloads_are_named(run: Path) -> None:
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        sql = "SELECT code_id, payload FROM codes ORDER BY code_id LIMIT 2"
        (a, pa_), (b, pb) = db.execute(sql).fetchall()
        db.execute("UPDATE codes SET payload = ? WHERE code_id = ?", (pb, a))
        db.execute("UPDATE codes SET payload = ? WHERE code_id = ?", (pa_, b))
    verdict = only_failure(replay(run), "results")
    assert verdict.item.startswith("codes.sqlite epoch") and "altered" in verdict.reason


def test_red_code_resigned_green_is_named(run: Path) -> None:
    """The holder of the signing key re-signs a red subject's code as green; the database still says red
    and the forged code verifies — the digest of every payload byte names it."""
    code, payload = red_code(run)
    cose = codes.decode_payload(payload).cose
    claims = codes.decode_claims(cose.payload)
    hcert = claims[codes.CLAIM_HCERT][codes.HCERT_ENTRY]
    assert hcert["c"] == "red"
    hcert["c"] = "green"
    hcert.pop("vd", None)
    key, kid = load_signing_key(PkiPaths(run))
    forged = codes.issue_code(claims, key, kid)
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE codes SET payload = ? WHERE code_id = ?", (forged, code))
    verdict = only_failure(replay(run), "results")
    assert verdict.item.startswith("codes.sqlite epoch") and "altered" in verdict.reason


def test_edited_reasons_are_named(run: Path) -> None:
    code, _ = red_code(run)
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE codes SET reasons = '[]' WHERE code_id = ?", (code,))
    verdict = only_failure(replay(run), "results")
    assert verdict.item.startswith("codes.sqlite epoch") and "altered" in verdict.reason


def test_revocation_list_with_a_broken_signature_is_named(run: Path) -> None:
    path = PkiPaths(run).revocations
    doc = json.loads(path.read_text())
    doc["issued_at"] = "2020-02-02T00:00:00Z"  # the body changes, the signature stays
    path.write_text(json.dumps(doc))
    verdict = only_failure(replay(run), "results")
    assert verdict.item == REVOCATIONS_ITEM and "altered" in verdict.reason
    assert "signature" in verdict.reason


def test_issuer_signed_list_revoking_what_the_log_never_revoked_is_named(run: Path) -> None:
    paths = PkiPaths(run)
    code, _ = red_code(run)
    key = serialization.load_pem_private_key(paths.signing_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    issued = dt.datetime(2020, 2, 1, tzinfo=dt.UTC)
    doc = make_revocations([code], key, issued_at=issued, issuer=paths.home_issuer)
    paths.revocations.write_text(json.dumps(doc))
    verdict = only_failure(replay(run), "results")
    assert verdict.item == REVOCATIONS_ITEM and f"never revoked: {code}" in verdict.reason


def test_swapped_qr_images_are_named(run: Path) -> None:
    first, second = sorted((run / "coordinator" / "qr").glob("*.png"))[:2]
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    verdict = only_failure(replay(run), "results")
    assert verdict.item == "qr/" and first.name in verdict.reason and second.name in verdict.reason


def test_edited_epoch_summary_is_named(run: Path) -> None:
    path = run / "coordinator" / "epoch.json"
    summary = json.loads(path.read_text())
    summary["colours"]["red"] -= 1
    summary["colours"]["green"] += 1
    path.write_text(json.dumps(summary, indent=2) + "\n")
    verdict = only_failure(replay(run), "results")
    assert verdict.item == "epoch.json" and "altered" in verdict.reason


def test_altered_features_are_named(run: Path) -> None:
    path = run / "coordinator" / "features.parquet"
    pq.write_table(pq.read_table(path).slice(1), path)
    verdict = only_failure(replay(run), "results")
    assert verdict.item == "features.parquet" and verdict.reason.startswith("altered")


def test_altered_matches_with_a_rewritten_log_differ_from_the_rerun(run: Path, rerun: Path) -> None:
    """A coordinator that alters its matches and rewrites its own log to agree (it holds the key) keeps
    its chain intact — the re-run shows the results and the log are not what the scenario gives."""
    path = run / "coordinator" / "matches.parquet"
    frame = pq.read_table(path).slice(1)
    day = epoch_dir(run, load_scenario(run).as_of)
    for target in (path, day / "matches.parquet"):  # the latest file and the epoch's own copy
        pq.write_table(frame, target)
    digest = frame_digest(frame.to_pandas(), ["subject_id", "agency", "token", "case_id"])
    items = entries(run / COORDINATOR_LOG)
    for e in items:
        if e["kind"] == "matches_written":
            e["data"].update(digest=digest, rows=frame.num_rows)
        if e["kind"] == "head":
            e["data"]["matches_digest"] = digest
    relog(run / COORDINATOR_LOG, items, load_identity_key(PkiPaths(run).coordinator_identity_key))
    witness = failing(replay(run), str(COORDINATOR_LOG))  # the witness still holds the head it was given
    assert [v.kind for v in witness] == ["witness"] and "rewritten" in witness[0].reason
    heads = run / "audit" / "heads" / "coordinator"
    for old in heads.iterdir():  # a forger who also controls the auditor's inbox
        old.unlink()
    for e in entries(run / COORDINATOR_LOG):
        if e["kind"] == "head":
            (heads / f"head-{e['seq']:012d}.jsonl").write_text(canonical(e) + "\n", encoding="utf-8")
    assert replay(run).ok  # on its own, a consistent forgery by the key holder
    report = replay(run, rerun_dir=rerun)
    named = {v.item for v in failing(report, "rerun")}
    assert named == {"matches.parquet", f"epochs/{day.name}/matches.parquet", str(COORDINATOR_LOG)}


def test_budget_overrun_is_named(run: Path) -> None:
    """A node that logged a cap below what it then charged (a node ignoring its budget)."""
    path = run / node_log("carrier")
    items = entries(path)
    k = index_of(items, lambda e: e["kind"] == "evaluate" and e["data"]["count"] > 1)
    pid = items[k]["data"]["partition_id"]
    for e in items:
        if e["kind"] == "budget_set" and e["data"]["partition_id"] == pid:
            e["data"]["total"] = 1
    relog(path, items, NodeSecrets.of(run, "carrier").load_identity())
    report = replay(run)
    budget = [v for v in failing(report, "budgets") if v.item == f"carrier/{pid}"]
    assert len(budget) == 1 and "over budget" in budget[0].reason
    assert "charged" in verdict_at(report, "nodes/carrier/audit.jsonl", k + 1).reason


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_runner() -> Iterator[CliRunner]:
    """A Typer test runner."""
    yield CliRunner()


def test_cli_exit_status_and_json(done: Path, run: Path, cli_runner: CliRunner, tmp_path: Path) -> None:
    clean = cli_runner.invoke(cli.app, ["audit", "replay", str(done), "--no-rerun", "--json"])
    assert clean.exit_code == 0, clean.output
    doc = json.loads(clean.stdout)
    assert doc["ok"] is True and doc["verdicts"] and doc["summary"]["openings"]["fail"] == 0

    path = run / "coordinator" / "matches.parquet"
    pq.write_table(pq.read_table(path).slice(2), path)
    broken = cli_runner.invoke(
        cli.app, ["audit", "replay", str(run), "--no-rerun", "--problems-only"], env={"COLUMNS": "300"}
    )
    assert broken.exit_code == 1
    assert (
        "matches.parquet" in broken.stdout and "altered" in broken.stdout and "do not hold" in broken.stdout
    )

    unusable = cli_runner.invoke(cli.app, ["audit", "replay", str(tmp_path / "nothing"), "--no-rerun"])
    assert unusable.exit_code == 2

    help_text = cli_runner.invoke(cli.app, ["audit", "replay", "--help"])
    assert help_text.exit_code == 0 and "healthpsi audit replay runs/demo" in help_text.stdout
