"""The issuance benchmark: health codes signed and verified per second, against raw ECDSA P-256.

Ours: `crypto.codes.issue_code` (canonical CBOR claims → COSE_Sign1 ES256 → zlib → base45 → "HCP1:")
and `crypto.codes.verify_payload` (the whole offline check a verifier makes: unprefix, base45, inflate,
COSE, trust-list lookup, signature, validity period, revocation list). The baseline signs and verifies the
very same COSE Sig_structure bytes with pyca/cryptography's ECDSA P-256 SHA-256 and nothing else, in the
same run, so the ratio is the share of the time the signature itself takes. Each figure is the median of
several repetitions, the measurements interleaved.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks import Step
from benchmarks.measure import rate
from coordinator.claims import health_claims
from coordinator.issuance import code_id, sign_job
from crypto import codes
from crypto.drbg import Drbg
from crypto.pki import DEFAULT_ISSUER, load_revocations
from proto import ids
from runctx.pki import PkiPaths, create_pki, load_pinned_trust_list, load_signing_key

ISSUED_AT = dt.datetime(2020, 2, 1, tzinfo=dt.UTC)
CODES_PER_EPOCH = 2_190_000
"""Codes Sanmenxia issued (2.19 M for 2.4 M people): what the two-worker rate is projected to."""


@dataclass(frozen=True)
class IssueBenchSettings:
    """Sizes of one issuance benchmark run."""

    codes: int = 4_000
    """Codes per rate measurement."""
    repeat: int = 5
    workers: int = 2

    @classmethod
    def quick(cls) -> IssueBenchSettings:
        """Small sizes for tests (the figures are noisy)."""
        return cls(codes=200, repeat=2)

    def steps(self) -> int:
        """How many progress steps `run_issue_bench` reports."""
        return 1 + 5 * self.repeat


def _claims(count: int, secret: bytes) -> list[dict[int, Any]]:
    """Claim sets as an epoch issues them, across the three colours."""
    out = []
    for i in range(count):
        subject = ids.from_int(41120219800101000 + 7 * i)
        colour = codes.COLOURS[i % 3]
        out.append(
            health_claims(
                code_id=code_id(secret, "bench", subject),
                issuer=DEFAULT_ISSUER,  # the issuer of the key create_pki makes first
                colour=colour,
                policy_version="default-2020",
                name="张三丰",
                subject_id=subject,
                issued_at=ISSUED_AT,
                colour_until=None if colour == "green" else dt.date(2020, 2, 14),
            )
        )
    return out


def _sign_two_workers(pool: ProcessPoolExecutor, key_pem: bytes, kid: bytes, claims: list[dict[int, Any]],
                      workers: int) -> None:
    """Sign claim sets in `workers` equal shares on the pool, as the epoch's issuance does."""
    size = -(-len(claims) // workers)
    futures = [pool.submit(sign_job, key_pem, kid, claims[i : i + size]) for i in range(0, len(claims), size)]
    for future in futures:
        future.result()


def run_issue_bench(settings: IssueBenchSettings, step: Step | None = None) -> dict[str, Any]:
    """Run the issuance benchmark and return its figures (the `issue` section of `healthpsi bench --json`)."""
    report = step or (lambda _: None)
    with tempfile.TemporaryDirectory(prefix="healthpsi-bench-issue-") as tmp:
        paths = PkiPaths(Path(tmp))
        create_pki(paths, rng=Drbg(b"healthpsi bench issue"), now=ISSUED_AT)
        key, kid = load_signing_key(paths)
        trust = load_pinned_trust_list(paths)
        revocations = load_revocations(paths.revocations, trust)
    public = key.public_key()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    claims = _claims(settings.codes, b"healthpsi bench issue secret")
    payloads = [codes.issue_code(c, key, kid) for c in claims]
    messages = [codes.decode_payload(p).cose.to_be_signed() for p in payloads]
    algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    signatures = [key.sign(m, algorithm) for m in messages]
    at = ISSUED_AT + dt.timedelta(hours=1)
    n = settings.codes

    def verify_all() -> None:
        for payload in payloads:
            codes.verify_payload(payload, trust, at, revocations)

    def raw_verify_all() -> None:
        for message, signature in zip(messages, signatures, strict=True):
            public.verify(signature, message, algorithm)

    with ProcessPoolExecutor(max_workers=settings.workers) as pool:
        _sign_two_workers(pool, key_pem, kid, claims[: settings.workers * 4], settings.workers)  # warm
        report("worker processes started")
        measurements: dict[str, Callable[[], float]] = {
            "raw_sign_per_s": lambda: rate(n, lambda: [key.sign(m, algorithm) for m in messages]),
            "sign_per_s": lambda: rate(n, lambda: [codes.issue_code(c, key, kid) for c in claims]),
            "raw_verify_per_s": lambda: rate(n, raw_verify_all),
            "verify_per_s": lambda: rate(n, verify_all),
            "sign_workers_per_s": lambda: rate(
                n, lambda: _sign_two_workers(pool, key_pem, kid, claims, settings.workers)
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in measurements}
        for _ in range(settings.repeat):
            for name, measure in measurements.items():
                samples[name].append(measure())
                report(f"issue: {name}")

    def ratio(ours: str, raw: str) -> float:
        return statistics.median(a / b for a, b in zip(samples[ours], samples[raw], strict=True))

    rates = {name: statistics.median(values) for name, values in samples.items()}
    return {
        **rates,
        "sign_vs_raw": ratio("sign_per_s", "raw_sign_per_s"),
        "verify_vs_raw": ratio("verify_per_s", "raw_verify_per_s"),
        "sign_workers_speedup": ratio("sign_workers_per_s", "sign_per_s"),
        "payload_chars": statistics.median(len(p) for p in payloads),
        "sanmenxia_codes_seconds": CODES_PER_EPOCH / rates["sign_workers_per_s"],
        "rate_ranges": {name: [min(values), max(values)] for name, values in samples.items()},
        "settings": asdict(settings),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_end": list(os.getloadavg()),
        },
        "notes": {
            "sign": "issue_code: claims → canonical CBOR → COSE_Sign1 ES256 (deterministic ECDSA) → zlib → "
            "base45, one core",
            "verify": "verify_payload: the whole offline check (decode, trust list, signature, validity, "
            "revocations), one core",
            "raw": "pyca/cryptography ECDSA P-256 SHA-256 (deterministic nonces, as ours) over the same "
            "Sig_structure bytes and nothing else, one core",
            "sign_workers_per_s": f"issue_code through coordinator.issuance.sign_job on {settings.workers} "
            "worker processes, as the epoch issues codes",
            "sanmenxia_codes_seconds": f"{CODES_PER_EPOCH:,} codes at the worker rate",
        },
    }
