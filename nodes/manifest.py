"""The node's manifest: per partition, what its index is and how much budget is left, signed with Ed25519."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nodes.budget import Budget
from nodes.index import IndexMeta
from proto.healthpsi.v1 import node_pb2

SUITE = "ristretto255-SHA512"


class ManifestError(Exception):
    """A signed manifest that does not verify or does not parse."""


def partition_info(meta: IndexMeta, key_version: int, budget: Budget) -> node_pb2.PartitionInfo:
    """The manifest entry of one partition."""
    return node_pb2.PartitionInfo(
        partition_id=meta.partition_id,
        dataset=meta.dataset,
        day=meta.day,
        token_kinds=list(meta.token_kinds),
        entry_count=meta.entry_count,
        index_digest=meta.index_digest,
        index_bytes=meta.index_bytes,
        public_key=meta.public_key,
        key_version=key_version,
        budget_total=budget.total,
        budget_left=budget.left,
    )


def build_manifest(
    agency: str,
    as_of: dt.date,
    window_days: int,
    issued_at: dt.datetime,
    malformed: Mapping[str, int],
    partitions: Sequence[node_pb2.PartitionInfo],
    max_batch: int,
    randomness: str,
) -> node_pb2.Manifest:
    """The manifest of a node: its window, malformed-row counts, partitions (sorted by id) and where its
    secrets come from ("deterministic" or "system", `Scenario.randomness`)."""
    return node_pb2.Manifest(
        agency=agency,
        suite=SUITE,
        as_of=as_of.isoformat(),
        window_days=window_days,
        issued_at=issued_at.isoformat(timespec="seconds"),
        malformed={name: int(count) for name, count in malformed.items()},
        partitions=sorted(partitions, key=lambda p: p.partition_id),
        max_batch=max_batch,
        randomness=randomness,
    )


def public_key_bytes(identity_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte Ed25519 public key of an identity key."""
    return identity_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_manifest(manifest: node_pb2.Manifest, identity_key: Ed25519PrivateKey) -> node_pb2.SignedManifest:
    """Serialize the manifest deterministically and sign those exact bytes with the node's identity key."""
    data = manifest.SerializeToString(deterministic=True)
    return node_pb2.SignedManifest(
        manifest=data, signature=identity_key.sign(data), identity_key=public_key_bytes(identity_key)
    )


def verify_manifest(signed: node_pb2.SignedManifest, identity_key: bytes) -> node_pb2.Manifest:
    """Check a signed manifest against the expected Ed25519 public key (32 bytes) and parse it."""
    if signed.identity_key != identity_key:
        raise ManifestError("manifest identity key is not the expected node identity key")
    try:
        Ed25519PublicKey.from_public_bytes(identity_key).verify(signed.signature, signed.manifest)
    except (InvalidSignature, ValueError) as exc:
        raise ManifestError("manifest signature does not verify") from exc
    manifest = node_pb2.Manifest()
    try:
        manifest.ParseFromString(signed.manifest)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ManifestError(f"manifest does not parse: {exc}") from exc
    return manifest
