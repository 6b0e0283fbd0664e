"""Node faults: refused calls are in the node's audit log, with what the peer chose capped (a StreamIndex
refusal, an Evaluate of a megabyte-long partition id logged and echoed in a few hundred characters); a port
file left by a node killed with -9 is gone once a new node holds the state."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto import oprf
from crypto.auditlog import verify_file
from nodes.handlers import MAX_LOGGED_CHARS, NodeHandlers
from nodes.secrets import NodeSecrets
from nodes.startup import open_node
from proto.errors import FailedPrecondition, NotFound
from proto.healthpsi.v1 import node_pb2


def _handlers_tests() -> ModuleType:
    """tests/unit/test_node_handlers.py, whose small transport run these tests reuse."""
    spec = importlib.util.spec_from_file_location("node_handler_tests", Path(__file__).with_name(
        "test_node_handlers.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("refusals")
    _handlers_tests().write_run(run)
    return run


@pytest.fixture
def node(base_run: Path, tmp_path: Path) -> Iterator[NodeHandlers]:
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    handlers = open_node(run, "transport")
    yield handlers
    handlers.close()


def entries(node: NodeHandlers) -> list[dict[str, Any]]:
    path = Path(node.audit.name)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stream_index_refusals_are_logged(node: NodeHandlers) -> None:
    with pytest.raises(NotFound):
        node.stream_index(node_pb2.StreamIndexRequest(partition_id="trip@1999-01-01"))
    pid = next(iter(node.partitions))
    with pytest.raises(FailedPrecondition):
        node.stream_index(node_pb2.StreamIndexRequest(partition_id=pid, index_digest=bytes(32)))
    refused = [e["data"] for e in entries(node) if e["kind"] == "index_refused"]
    assert [(r["partition_id"], r["status"]) for r in refused] == [
        ("trip@1999-01-01", "NOT_FOUND"), (pid, "FAILED_PRECONDITION")
    ]


def test_a_megabyte_partition_id_is_capped_in_the_log_and_the_error(node: NodeHandlers) -> None:
    huge = "p" * (1 << 20)
    _, blinded = oprf.blind_many([b"a"], oprf.Mode.VOPRF)
    with pytest.raises(NotFound) as refused:
        node.evaluate(node_pb2.EvaluateRequest(partition_id=huge, blinded_elements=blinded,
                                               idempotency_key="k" * 100_000))
    assert len(str(refused.value)) < 2 * MAX_LOGGED_CHARS and f"({1 << 20} characters)" in str(refused.value)
    path = Path(node.audit.name)
    last = path.read_bytes().splitlines()[-1]
    assert len(last) < 8 * MAX_LOGGED_CHARS
    data = json.loads(last)["data"]
    assert data["outcome"] == "refused" and data["partition_id"].endswith(f"({1 << 20} characters)")


def test_a_refused_peer_is_logged(base_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    node = open_node(run, "transport")
    node.log_refusal("GetManifest", "PERMISSION_DENIED", "not the coordinator's certificate", "ipv4:1.2.3.4")
    node.close()
    last = entries(node)[-2]  # before the closing head
    assert last["kind"] == "refused" and last["data"]["call"] == "GetManifest"
    identity = NodeSecrets.of(run, "transport").load_identity()
    assert verify_file(node.audit.name, identity.public_key()).ok


def test_a_stale_port_file_is_removed_when_a_node_takes_the_state(base_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    port = run / "nodes" / "transport" / "port"
    port.parent.mkdir(parents=True, exist_ok=True)
    port.write_text("65000\n")  # what a node killed with -9 leaves behind
    node = open_node(run, "transport")
    try:
        assert not port.exists()
    finally:
        node.close()


def test_duplicate_rows_and_an_empty_dataset_are_reported_when_the_node_builds(
    base_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    tickets = run / "data" / "transport" / "tickets.parquet"
    table = pq.read_table(tickets)
    pq.write_table(pa.concat_tables([table, table.slice(0, 4)]), tickets)
    with caplog.at_level(logging.WARNING, logger="healthpsi.node"):
        node = open_node(run, "transport")
        node.close()
    assert f"{tickets}: 4 rows repeat an earlier row exactly; skipped" in caplog.text
    assert [e["data"] for e in entries(node) if e["kind"] == "duplicate_rows_skipped"] == [
        {"file": str(tickets), "rows": 4}
    ]
    assert "holds no usable rows" not in caplog.text
    caplog.clear()
    pq.write_table(table.slice(0, 0), tickets)
    with caplog.at_level(logging.WARNING, logger="healthpsi.node"):
        node = open_node(run, "transport")
        node.close()
    assert "transport: the tickets dataset holds no usable rows" in caplog.text
    assert node.partitions == {}
