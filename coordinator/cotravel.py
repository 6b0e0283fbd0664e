"""The private co-travel check (同行查询): per-day VOPRF keys, the signed manifests of published tags, and the
evaluation of a citizen's blinded tokens.

For each day of the window the coordinator keeps a VOPRF key `k_c` (RUN/coordinator/cotravel/keys/DAY.key,
mode 0600; drawn from the scenario's seed in a deterministic simulation run, from the operating system
otherwise) and publishes the tags `HKDF-SHA256(Evaluate(k_c, t), "healthpsi tag")[:16]` of that day's `trip`
and `carriage` risk tokens in a manifest (RUN/coordinator/cotravel/DAY.json) signed with the coordinator's
Ed25519 identity key (itself listed in the root-signed identities.json), naming the issuing authority the
coordinator works for (its GB/T 2260 region code, as codes carry it in `iss`). A client blinds its tokens for
every published day — its own day's real tokens, random ones elsewhere — so that the evaluation request
shows neither the trip nor its date.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from coordinator.risk import build_risk_set, load_health, load_scenario
from crypto import group, oprf
from crypto.drbg import Rng
from crypto.labels import derive_tag
from crypto.pki import canonical_json, load_identity_key
from proto import risk as risk_rule
from proto import tokens as tk
from runctx.files import write_atomic
from runctx.pki import PkiPaths, save_json

MANIFEST_TYPE = "healthpsi-cotravel"
MANIFEST_VERSION = 1
KINDS = ("trip", "carriage")
ELEMENTS_PER_DAY = 2
"""A check always sends two blinded elements per day (trip, carriage — random ones where it has none)."""
TAG_BYTES = 16


class CotravelError(ValueError):
    """A co-travel manifest or request that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class CotravelPaths:
    """Where the co-travel files of a run live (RUN/coordinator/cotravel/)."""

    run: Path

    @property
    def directory(self) -> Path:
        """RUN/coordinator/cotravel."""
        return self.run / "coordinator" / "cotravel"

    def key(self, day: dt.date) -> Path:
        """The day's VOPRF secret key (32 raw bytes, mode 0600)."""
        return self.directory / "keys" / f"{day.isoformat()}.key"

    def manifest(self, day: dt.date) -> Path:
        """The day's signed manifest."""
        return self.directory / f"{day.isoformat()}.json"

    def manifests(self) -> list[Path]:
        """Every published manifest, by day."""
        return sorted(self.directory.glob("????-??-??.json"))


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str, size: int | None = None) -> bytes:
    """Strict base64 of `size` bytes (any size when None); CotravelError naming `what` otherwise."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise CotravelError(f"{what}: expected base64 of {size or 'some'} bytes")
    return raw


def day_key(paths: CotravelPaths, day: dt.date, rng: Rng | None) -> tuple[bytes, bytes]:
    """The day's key pair (sk, pk): read when it exists, else made from `rng` (system randomness if None)."""
    path = paths.key(day)
    if path.exists():
        sk = group.validate_scalar(path.read_bytes(), f"co-travel key {path}")
        return sk, group.base_mult(sk)
    sk, pk = oprf.generate_key_pair(rng)
    write_atomic(path, sk, private=True)
    return sk, pk


def publish(run: Path, as_of: dt.date | None = None, issued_at: dt.datetime | None = None) -> list[Path]:
    """Write a signed manifest for every day of the window ending at `as_of` (the scenario's by default):
    the day's public key and the sorted tags of its trip and carriage risk tokens."""
    scenario = load_scenario(run)
    as_of = as_of or scenario.as_of
    first, last = risk_rule.window(as_of, scenario.window_days)
    rows = build_risk_set(load_health(run), as_of, scenario.window_days).rows
    by_day: dict[dt.date, set[str]] = {}
    for token in rows.loc[rows["kind"].isin(KINDS), "token"]:
        day = tk.parse(str(token)).day
        if day is not None:
            by_day.setdefault(day, set()).add(str(token))
    pki = PkiPaths(run)
    signer = load_identity_key(pki.coordinator_identity_key)
    paths = CotravelPaths(run)
    # a seeded run's manifests carry its simulated clock (the day after as_of), like its codes
    issued_at = issued_at or scenario.with_window(as_of).clock()
    stamp = issued_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        sk, pk = day_key(paths, day, scenario.rng(f"coordinator/cotravel/{day.isoformat()}"))
        tokens = sorted(by_day.get(day, ()))
        outputs = oprf.evaluate_many(sk, [t.encode() for t in tokens], oprf.Mode.VOPRF)
        body = {
            "type": MANIFEST_TYPE,
            "version": MANIFEST_VERSION,
            "date": day.isoformat(),
            "suite": "ristretto255-SHA512 VOPRF",
            "public_key": b64(pk),
            "tags": sorted(b64(derive_tag(y)) for y in outputs),
            "issued_at": stamp,
            "issuer": pki.home_issuer,
            "deterministic": scenario.deterministic,
        }
        save_json(paths.manifest(day), sign_manifest(body, signer))
        written.append(paths.manifest(day))
    return written


def sign_manifest(body: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> dict[str, Any]:
    """The manifest with its `signature`: Ed25519 by the coordinator's identity key, over canonical JSON."""
    return {**body, "signature": {"alg": "Ed25519", "value": b64(key.sign(canonical_json(body)))}}


def verify_manifest(doc: Any, coordinator: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Check a manifest's type and its signature by the coordinator's identity key; return its body."""
    if (
        not isinstance(doc, dict)
        or doc.get("type") != MANIFEST_TYPE
        or doc.get("version") != MANIFEST_VERSION
    ):
        raise CotravelError(f"expected a {MANIFEST_TYPE} document, version {MANIFEST_VERSION}")
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519":
        raise CotravelError("co-travel manifest: missing or malformed Ed25519 signature")
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        coordinator.verify(unb64(sig.get("value"), "manifest signature", 64), canonical_json(body))
    except InvalidSignature:
        raise CotravelError(
            "co-travel manifest: the signature does not verify against the coordinator's key"
        ) from None
    return body


@dataclass(frozen=True)
class Evaluation:
    """The evaluated elements of one day and the batched DLEQ proof that the day's key made them."""

    evaluated: list[bytes]
    proof: bytes


def check_request(paths: CotravelPaths, request: dict[str, list[bytes]]) -> None:
    """Refuse a request unless it names every published day with exactly ELEMENTS_PER_DAY valid elements (so
    its shape tells nothing). Raises CotravelError naming the problem."""
    published = {p.stem for p in paths.manifests()}
    if not published:
        raise CotravelError("no co-travel manifest is published; run: healthpsi cotravel publish --run RUN")
    if set(request) != published:
        raise CotravelError(
            f"blinded elements must be sent for every published day ({len(published)} days: "
            f"{min(published)} to {max(published)}), no more"
        )
    for day, blinded in sorted(request.items()):
        if len(blinded) != ELEMENTS_PER_DAY:
            raise CotravelError(f"{day}: expected {ELEMENTS_PER_DAY} blinded elements, got {len(blinded)}")
        for i, element in enumerate(blinded):
            problem = group.element_problem(element)
            if problem:
                raise CotravelError(f"{day}: blinded element {i} is {problem}")


def evaluate(paths: CotravelPaths, request: dict[str, list[bytes]]) -> dict[str, Evaluation]:
    """Evaluate a checked request's blinded elements under each day's key (see `check_request`)."""
    check_request(paths, request)
    out = {}
    for day, blinded in sorted(request.items()):
        sk = group.validate_scalar(paths.key(dt.date.fromisoformat(day)).read_bytes(), "co-travel key")
        pk = group.base_mult(sk)
        evaluated = [oprf.blind_evaluate(sk, b) for b in blinded]
        out[day] = Evaluation(evaluated, oprf.generate_proof(sk, pk, blinded, evaluated))
    return out


def dummy_token() -> bytes:
    """A random token for the days a client does not travel on (indistinguishable once blinded)."""
    return b"dummy|" + secrets.token_hex(16).encode()
