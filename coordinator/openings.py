"""The coordinator's queries and their openings: what it asks a node (`Query`), one Evaluate call with its
blinds (`Batch`), and the on-disk format of openings and answers, sealed at rest, that the auditor reads
back to re-derive every blinded input.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.sealing import read_sealed_json, write_sealed_json
from crypto import oprf
from crypto.group import split_packed
from proto.healthpsi.v1 import node_pb2

MODE = oprf.Mode.VOPRF
"""The OPRF mode of every query (verifiable: each answer carries a DLEQ proof)."""
OPENING_VERSION = 1


@dataclass(frozen=True)
class Query:
    """Tokens to look up in one partition of one node, and why ("risk", "identity")."""

    agency: str
    partition_id: str
    purpose: str
    tokens: tuple[str, ...]


@dataclass
class Batch:
    """One Evaluate call: the tokens, their blinds (the opening) and, once answered, the node's answer."""

    agency: str
    partition_id: str
    purpose: str
    epoch: str
    number: int
    public_key: bytes
    tokens: list[str] = field(repr=False)
    blinds: list[bytes] = field(repr=False)
    blinded: bytes
    evaluated: bytes | None = None
    proof: bytes | None = None
    budget_left: int | None = None
    verified: bool = False
    """Whether the proof was checked in this process (answers read back from disk are checked again)."""

    @property
    def inputs_digest(self) -> bytes:
        """SHA-256 of the packed blinded elements (what both sides log)."""
        return hashlib.sha256(self.blinded).digest()

    @property
    def idempotency_key(self) -> str:
        """A key that names this exact request and reveals nothing about its purpose."""
        label = f"{self.epoch}|{self.agency}|{self.partition_id}|{self.purpose}|{self.number}|"
        return hashlib.sha256(label.encode() + self.inputs_digest).hexdigest()[:32]

    @property
    def answered(self) -> bool:
        """Whether the node's answer is recorded."""
        return self.evaluated is not None

    def request(self) -> node_pb2.EvaluateRequest:
        """The Evaluate request of this batch."""
        return node_pb2.EvaluateRequest(
            partition_id=self.partition_id,
            blinded_elements=self.blinded,
            verifiable=True,
            idempotency_key=self.idempotency_key,
        )

    def finish_args(self, check_proof: bool) -> tuple[Any, ...]:
        """The arguments of `finish_job` for this answered batch."""
        return (
            self.public_key, self.tokens, self.blinds, self.blinded, self.evaluated, self.proof, check_proof
        )

    def opening(self) -> dict[str, Any]:
        """The sealed-at-rest record of the query: what an auditor needs to re-derive the blinded inputs."""
        return {
            "version": OPENING_VERSION,
            "agency": self.agency,
            "partition_id": self.partition_id,
            "purpose": self.purpose,
            "epoch": self.epoch,
            "batch": self.number,
            "idempotency_key": self.idempotency_key,
            "inputs_digest": self.inputs_digest.hex(),
            "public_key": self.public_key.hex(),
            "tokens": self.tokens,
            "blinds": _b64(b"".join(self.blinds)),
            "blinded": _b64(self.blinded),
        }

    def answer(self) -> dict[str, Any]:
        """The sealed-at-rest record of the node's answer."""
        assert self.evaluated is not None and self.proof is not None
        return {
            "idempotency_key": self.idempotency_key,
            "evaluated": _b64(self.evaluated),
            "proof": _b64(self.proof),
            "budget_left": self.budget_left,
        }

    @classmethod
    def from_records(cls, opening: Mapping[str, Any], answer: Mapping[str, Any] | None) -> Batch:
        """Rebuild a batch from its opening and (if any) its answer."""
        batch = cls(
            agency=opening["agency"],
            partition_id=opening["partition_id"],
            purpose=opening["purpose"],
            epoch=opening["epoch"],
            number=int(opening["batch"]),
            public_key=bytes.fromhex(opening["public_key"]),
            tokens=list(opening["tokens"]),
            blinds=split_packed(_unb64(opening["blinds"])),
            blinded=_unb64(opening["blinded"]),
        )
        if answer is not None:
            batch.evaluated = _unb64(answer["evaluated"])
            batch.proof = _unb64(answer["proof"])
            batch.budget_left = answer.get("budget_left")
        return batch


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class OpeningStore:
    """`RUN/coordinator/openings/<agency>/<partition>/<key>.query|.answer`, each sealed (AES-256-GCM)."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = Path(directory)
        self.key = key

    def _dir(self, agency: str, partition_id: str) -> Path:
        return self.directory / agency / partition_id

    def save_query(self, batch: Batch) -> None:
        """Record a batch's opening (before it is sent)."""
        path = self._dir(batch.agency, batch.partition_id) / f"{batch.idempotency_key}.query"
        write_sealed_json(self.key, path, batch.opening())

    def save_answer(self, batch: Batch) -> None:
        """Record a batch's answer (after its proof verified)."""
        path = self._dir(batch.agency, batch.partition_id) / f"{batch.idempotency_key}.answer"
        write_sealed_json(self.key, path, batch.answer())

    def batches(self, agency: str, partition_id: str) -> list[Batch]:
        """Every recorded batch of a partition, ordered by (epoch, purpose, number)."""
        out = []
        directory = self._dir(agency, partition_id)
        for query in sorted(directory.glob("*.query")) if directory.is_dir() else []:
            answer_path = query.with_suffix(".answer")
            answer = read_sealed_json(self.key, answer_path) if answer_path.exists() else None
            out.append(Batch.from_records(read_sealed_json(self.key, query), answer))
        return sorted(out, key=lambda b: (b.epoch, b.purpose, b.number))

    def all_batches(self) -> Iterator[Batch]:
        """Every recorded batch of every partition."""
        for agency_dir in sorted(p for p in self.directory.glob("*") if p.is_dir()):
            for part_dir in sorted(p for p in agency_dir.glob("*") if p.is_dir()):
                yield from self.batches(agency_dir.name, part_dir.name)


def read_openings(run_dir: Path, key: bytes) -> list[dict[str, Any]]:
    """Every query opening of a run with its answer, for auditors: the opening fields (tokens, blinds,
    blinded inputs, idempotency key, inputs digest, partition, public key) plus `answered`, `evaluated`,
    `proof` and `budget_left`."""
    store = OpeningStore(Path(run_dir) / "coordinator" / "openings", key)
    records = []
    for batch in store.all_batches():
        record = batch.opening()
        record["answered"] = batch.answered
        if batch.answered:
            record.update({k: v for k, v in batch.answer().items() if k != "idempotency_key"})
        records.append(record)
    return records


