"""The citizen's side of the co-travel check in Python (the browser's is web/src/cotravel.js): fetch and check
the signed manifests, blind the trip's tokens (random ones for every other published day), verify each day's
DLEQ proof and look the tags up locally."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from coordinator.cotravel import CotravelError, b64, dummy_token, unb64, verify_manifest
from crypto import group, oprf
from crypto.labels import derive_tag
from crypto.pki import parse_identities, parse_trust_list
from proto import tokens as tk


@dataclass(frozen=True)
class CotravelAnswer:
    """Whether a case's trip (and carriage, when asked) matched; the fingerprint of the root trusted."""

    trip: bool
    carriage: bool | None
    root_fingerprint: str


def _request(url: str, body: Any | None, timeout: float) -> Any:
    """GET (or POST a JSON body to) `url`; the JSON answer, or CotravelError with the service's reason."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("detail")
        except ValueError:
            detail = exc.reason
        raise CotravelError(f"{request.get_method()} {url}: HTTP {exc.code}: {detail}") from None


def check(
    service: str,
    trip: str,
    day: dt.date,
    carriage: int | None,
    root_fingerprint: str | None = None,
    timeout: float = 30.0,
) -> CotravelAnswer:
    """Ask `service` whether a confirmed or suspected case took `trip` on `day` (and `carriage`) without
    telling it which trip. The root is pinned by `root_fingerprint` (hex SHA-256 of its DER), else taken
    from the service's verifier configuration. Raises CotravelError (ProofError: a bad proof)."""
    try:
        return _check(service.rstrip("/"), trip, day, carriage, root_fingerprint, timeout)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise CotravelError(
            f"cannot reach the service at {service} ({exc}); is `healthpsi serve` running?"
        ) from None


def _check(
    service: str, trip: str, day: dt.date, carriage: int | None, root_fingerprint: str | None, timeout: float
) -> CotravelAnswer:
    pinned = root_fingerprint
    if pinned is None:
        pinned = str(_request(f"{service}/api/v1/verifier/config", None, timeout)["root_fingerprint"])
    bundle = _request(f"{service}/api/v1/cotravel/manifest", None, timeout)
    trust = parse_trust_list(bundle["trustlist"])
    if trust.root is None:
        raise CotravelError("the service's trust list carries no root certificate")
    actual = hashlib.sha256(trust.root.public_bytes(serialization.Encoding.DER)).hexdigest()
    if actual != pinned.lower():
        raise CotravelError(f"the service's root {actual} is not the pinned root {pinned}")
    coordinator = parse_identities(bundle["identities"], trust.root).coordinator
    manifests = {m["date"]: m for m in (verify_manifest(doc, coordinator) for doc in bundle["manifests"])}
    if day.isoformat() not in manifests:
        raise CotravelError(
            f"--date {day}: outside the published days ({min(manifests)} to {max(manifests)})"
        )
    own = [tk.trip(trip, day).encode()]
    own.append(tk.carriage(trip, day, carriage).encode() if carriage is not None else dummy_token())
    kept: dict[str, tuple[list[bytes], list[bytes], list[bytes]]] = {}
    for published in manifests:
        inputs = own if published == day.isoformat() else [dummy_token(), dummy_token()]
        pairs = [oprf.blind(x, oprf.Mode.VOPRF) for x in inputs]
        kept[published] = (inputs, [r for r, _ in pairs], [b for _, b in pairs])
    request = {d: [b64(e) for e in blinded] for d, (_, _, blinded) in kept.items()}
    answer = _request(f"{service}/api/v1/cotravel/evaluate", {"blinded": request}, timeout)
    outputs: list[bytes] = []
    for published, (inputs, blinds, blinded) in kept.items():
        got = answer["evaluations"].get(published)
        if not isinstance(got, dict) or len(got.get("evaluated", [])) != len(inputs):
            raise CotravelError(f"{published}: the service sent no evaluation")
        evaluated = [
            unb64(e, f"{published}: evaluated element", group.ELEMENT_BYTES) for e in got["evaluated"]
        ]
        pk = unb64(manifests[published]["public_key"], f"{published}: public key", group.ELEMENT_BYTES)
        oprf.verify_proof(
            pk, blinded, evaluated, unb64(got["proof"], f"{published}: proof", oprf.PROOF_BYTES)
        )
        if published == day.isoformat():
            outputs = [oprf.finalize(x, r, e) for x, r, e in zip(inputs, blinds, evaluated, strict=True)]
    tags = set(manifests[day.isoformat()]["tags"])
    return CotravelAnswer(
        trip=b64(derive_tag(outputs[0])) in tags,
        carriage=None if carriage is None else b64(derive_tag(outputs[1])) in tags,
        root_fingerprint=pinned.lower(),
    )
