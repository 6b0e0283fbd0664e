"""What the code service issues is bound in the coordinator's signed service log: a run whose service served
applications (real police node, real `healthpsi serve` with two workers) passes `healthpsi audit replay`,
re-run included; a code, an application or the log tampered with afterwards is named."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from audit.replay import replay
from audit.verdicts import Verdict
from coordinator.service_log import SERVICE_LOG
from service.commander.data import decide_appeal
from tests.servers import copy_run, outbox_code, served, unclaimed_people


def _sign_in(url: str, run: Path, phone: str, address: str) -> httpx.Client:
    c = httpx.Client(base_url=url, headers={"x-forwarded-for": address}, timeout=60)
    assert c.post("/api/v1/citizen/otp", json={"phone": phone}).status_code == 202
    otp = outbox_code(run, phone)
    assert c.post("/api/v1/citizen/session", json={"phone": phone, "otp": otp}).status_code == 200
    return c


@pytest.fixture(scope="module")
def served_run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the run after its service issued codes (self, family), refused a false declaration and
    answered an applicant who already held the epoch's code; the service stopped. Its codes by outcome."""
    run = copy_run(run_template, tmp_path_factory.mktemp("service-audit") / "run")
    free = unclaimed_people(run, 3)
    applicant = pq.read_table(run / "health" / "applicants.parquet").to_pylist()[0]
    held = {
        k: str(applicant[k])[:10] if k == "birth_date" else str(applicant[k])
        for k in ("subject_id", "name", "birth_date")
    }
    issued: list[str] = []
    with served(run, workers=2) as (_, service):
        for n, person in enumerate(free[:2]):
            phone = f"1370000000{n}"
            c = _sign_in(service.url, run, phone, f"10.1.0.{n + 1}")
            body = {"relation": "self", **person, "phone": phone, "symptoms": ["fever"] if n else []}
            response = c.post("/api/v1/citizen/applications", json=body)
            assert response.status_code == 201, response.text
            issued.append(response.json()["code_id"])
        family = {"relation": "family", **free[2], "phone": "13700000009", "symptoms": []}
        response = c.post("/api/v1/citizen/applications", json=family)
        assert response.status_code == 201, response.text
        issued.append(response.json()["code_id"])
        false = {**family, "name": "X" + free[2]["name"]}
        assert c.post("/api/v1/citizen/applications", json=false).status_code == 422
        again = c.post("/api/v1/citizen/applications", json={**family, **held})
        assert again.status_code == 201, again.text
        appeals = []
        for code_id in issued[-2:]:
            filed = c.post(
                f"/api/v1/citizen/codes/{code_id}/appeals", json={"reason": "I stayed home all week"}
            )
            assert filed.status_code == 201, filed.text
            appeals.append(filed.json()["appeal_id"])
    decide_appeal(
        run, appeals[0], "upheld", "chief"
    )  # what the commander's decision does; the other stays open
    return {"run": run, "issued": issued, "held": again.json()["code_id"], "appeals": appeals}


def _problems(run: Path) -> list[Verdict]:
    return [v for v in replay(run).verdicts if v.status == "fail"]


def _tampered(served_run: dict[str, Any], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(served_run["run"], run, symlinks=True)
    return run


def test_a_run_whose_service_issued_codes_passes_audit_replay(
    served_run: dict[str, Any], run_template: Path
) -> None:
    run = served_run["run"]
    entries = [json.loads(line) for line in (run / SERVICE_LOG).read_text().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds.count("applications_recorded") >= 1 and "evaluate" in kinds and kinds[-1] == "head"
    assert kinds.count("appeal_filed") == 2 and kinds.count("appeal_decided") == 1
    logged = {
        a["code_id"]: a["new"]
        for e in entries
        if e["kind"] == "applications_recorded"
        for a in e["data"]["applications"]
    }
    assert all(logged[c] is True for c in served_run["issued"]) and logged[served_run["held"]] is False
    cmd = [sys.executable, "-m", "healthpsi.cli", "audit", "replay", str(run), "--json"]
    cmd += ["--rerun-dir", str(run_template)]  # a fresh run of the same scenario, never served
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = json.loads(proc.stdout)
    failing = [v for v in report["verdicts"] if v["status"] == "fail"]
    assert proc.returncode == 0 and not failing, failing
    reasons = {v["item"]: v["reason"] for v in report["verdicts"]}
    assert reasons["codes.sqlite service codes"].startswith("3 codes issued by the service")
    assert reasons["codes.sqlite applications"].startswith("5 applications")
    assert "equals the re-run" in reasons["codes.sqlite"]
    assert reasons["codes.sqlite appeals"].startswith("2 appeals, each filed and decided")


def test_a_code_no_entry_binds_is_named(served_run: dict[str, Any], tmp_path: Path) -> None:
    run = _tampered(served_run, tmp_path)
    forged = "f" * 24
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute(
            "INSERT INTO codes SELECT ?, subject_id || '9', 'green', '[]', issued_at, expires_at, payload, "
            "epoch FROM codes WHERE code_id = ?",
            (forged, served_run["issued"][0]),
        )
    problems = {v.item: v.reason for v in _problems(run)}
    assert forged in problems["codes.sqlite service codes"]
    assert "no entry binds" in problems["codes.sqlite service codes"]
    # the epoch's own set of codes no longer has its logged digest either
    assert set(problems) == {"codes.sqlite service codes", *(i for i in problems if "epoch" in i)}


def test_a_service_code_altered_in_the_store_is_named(served_run: dict[str, Any], tmp_path: Path) -> None:
    run = _tampered(served_run, tmp_path)
    code_id = served_run["issued"][1]
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE codes SET color = 'green', reasons = '[]' WHERE code_id = ?", (code_id,))
        db.execute("UPDATE codes SET expires_at = '2099-01-01T00:00:00Z' WHERE code_id = ?", (code_id,))
    problems = _problems(run)
    assert [v.item for v in problems] == ["codes.sqlite service codes"]
    assert code_id in problems[0].reason and "line digest" in problems[0].reason


def test_an_application_deleted_from_the_store_is_named(served_run: dict[str, Any], tmp_path: Path) -> None:
    run = _tampered(served_run, tmp_path)
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        (application_id,) = db.execute(
            "SELECT application_id FROM applications WHERE status = 'refused'"
        ).fetchone()
        db.execute("DELETE FROM applications WHERE application_id = ?", (application_id,))
    problems = _problems(run)
    assert [v.item for v in problems] == ["codes.sqlite applications"]
    assert application_id in problems[0].reason and "missing from the store" in problems[0].reason


def test_an_appeal_decided_behind_the_logs_back_is_named(served_run: dict[str, Any], tmp_path: Path) -> None:
    run = _tampered(served_run, tmp_path)
    decided, still_open = served_run["appeals"]
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE appeals SET status = 'upheld' WHERE appeal_id = ?", (still_open,))
        db.execute("UPDATE appeals SET status = 'rejected' WHERE appeal_id = ?", (decided,))
    problems = _problems(run)
    assert [v.item for v in problems] == ["codes.sqlite appeals"]
    reason = problems[0].reason
    assert (
        f"{still_open} (upheld; logged: open)" in reason and f"{decided} (rejected; logged: upheld)" in reason
    )


def test_an_appeal_slipped_into_or_altered_in_the_store_is_named(
    served_run: dict[str, Any], tmp_path: Path
) -> None:
    run = _tampered(served_run, tmp_path)
    decided, _ = served_run["appeals"]
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        db.execute("UPDATE appeals SET reason = 'a different story' WHERE appeal_id = ?", (decided,))
        db.execute(
            "INSERT INTO appeals SELECT 'ffffffffffffffff', subject_id, code_id, reason, created_at, 'open' "
            "FROM appeals WHERE appeal_id = ?",
            (decided,),
        )
    problems = _problems(run)
    assert [v.item for v in problems] == ["codes.sqlite appeals"]
    reason = problems[0].reason
    assert "ffffffffffffffff" in reason and "no entry of the service's log filed" in reason
    assert decided in reason and "differ from the digest" in reason


def test_a_deleted_service_log_leaves_its_codes_and_queries_unbound(
    served_run: dict[str, Any], tmp_path: Path
) -> None:
    run = _tampered(served_run, tmp_path)
    (run / SERVICE_LOG).unlink()
    problems = {(v.section, v.item): v.reason for v in _problems(run)}
    assert "cannot read" in problems[(SERVICE_LOG.as_posix(), "log")]
    unbound = problems[("results", "codes.sqlite service codes")]
    assert all(code_id in unbound for code_id in served_run["issued"])
    assert any(
        section == "openings" and "no evaluate entry" in reason for (section, _), reason in problems.items()
    )
