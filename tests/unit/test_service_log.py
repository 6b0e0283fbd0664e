"""The code service's audit log: the line digest it binds is the one the auditor reads back from the store,
appends from several writers continue one chain, and heads are signed by the coordinator's key."""

from __future__ import annotations

import json
from pathlib import Path

from audit.service import epoch_codes_digest_without
from coordinator.results import epoch_codes_digest
from coordinator.service_log import (
    SERVICE_LOG,
    SERVICE_WITNESS,
    ServiceLog,
    application_digest,
    code_line,
    token_mac,
)
from coordinator.store import Application, CodeStore
from crypto.auditlog import read_lines, read_witness, verify_chain
from runctx.files import witness_dir
from runctx.pki import PkiPaths, create_pki, load_identities

EPOCH = "2020-01-31.abc"
CODE = ("c0de", "410102195209030807", "red", ("LONG_CELL_HOURS",), "2020-01-31T08:00:00Z",
        "2020-02-01T08:00:00Z", "HCP1:payload", EPOCH)


def _application(code_id: str | None = "c0de", status: str = "issued") -> Application:
    phone = "13900000001"
    return Application("a1", phone, "self", CODE[1], phone, ("fever",), CODE[4], EPOCH, status, None, code_id)


def test_a_code_line_is_the_line_the_store_gives_back(tmp_path: Path) -> None:
    with CodeStore(tmp_path / "codes.sqlite") as store:
        store.begin_epoch(EPOCH, "2020-01-31", "d", "2020-01-31T08:00:00Z")
        (row,) = store.record_applications([(_application(None), CODE, None)])
        assert row is not None
        ((line,),) = list(store.code_lines(EPOCH))
        assert code_line(CODE) == line == code_line(row)
        assert epoch_codes_digest_without(store, EPOCH, ()) == (epoch_codes_digest(store, EPOCH), 1)
        assert epoch_codes_digest_without(store, EPOCH, {"c0de"})[1] == 0


def test_application_digest_covers_every_field() -> None:
    assert application_digest(_application()) != application_digest(_application(status="refused"))
    assert application_digest(_application()) == application_digest(_application())


def test_token_macs_need_the_key() -> None:
    token = "identity|410102195209030807|苏刚玉|1952-09-03"
    assert token_mac(b"k" * 32, token) == token_mac(b"k" * 32, token) != token_mac(b"j" * 32, token)


def test_writers_continue_one_chain_and_sign_heads_with_the_coordinator_key(tmp_path: Path) -> None:
    paths = PkiPaths(tmp_path)
    create_pki(paths)
    first, second = ServiceLog(tmp_path), ServiceLog(tmp_path)  # two worker processes' writers
    first.append([("evaluate", {"epoch": EPOCH, "n": 1}), ("applications_recorded", {"epoch": EPOCH})])
    second.append([("applications_recorded", {"epoch": EPOCH, "n": 2})])
    first.append([("applications_recorded", {"epoch": EPOCH, "n": 3})])
    second.sign_head(EPOCH)
    first.sign_head(EPOCH)
    first.sign_head(EPOCH)  # nothing appended since: no third head
    lines = read_lines(tmp_path / SERVICE_LOG)
    report = verify_chain(lines, load_identities(paths).coordinator)
    assert report.ok and report.heads == 2 and report.unsigned_tail == 0
    assert [json.loads(x)["seq"] for x in lines if x] == list(range(6))
    assert len(read_witness(witness_dir(tmp_path, SERVICE_WITNESS))) == 2
