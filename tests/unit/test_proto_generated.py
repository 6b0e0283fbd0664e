"""The committed generated gRPC code must equal a fresh generation from proto/."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    gen = _load_generator()
    skip = shutil.ignore_patterns("*_pb2*", "__pycache__")
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=skip)
    gen.ROOT = tmp_path
    gen.generate(tmp_path)
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "proto").rglob("*_pb2*.py*")
                       if "__pycache__" not in p.parts)
    fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / "proto").rglob("*_pb2*.py*")
                   if "__pycache__" not in p.parts)
    assert committed == fresh, "generated files differ in name from a fresh `make proto`"
    stale = [str(p) for p in committed if (ROOT / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"committed generated files differ from a fresh `make proto`: {stale}"


def test_generated_code_imports() -> None:
    from proto.healthpsi.v1 import node_pb2, node_pb2_grpc

    assert node_pb2.DESCRIPTOR.package == "healthpsi.v1"
    assert "MatchingNode" in node_pb2.DESCRIPTOR.services_by_name
    assert hasattr(node_pb2_grpc, "MatchingNodeServicer")
    assert sys.modules["proto.healthpsi.v1.node_pb2"] is node_pb2
