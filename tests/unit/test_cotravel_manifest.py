"""Co-travel manifests: the coordinator's Ed25519 signature covers every field; a changed tag, key or date, or
another signer, is refused with the reason."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from coordinator.cotravel import (
    MANIFEST_TYPE,
    MANIFEST_VERSION,
    CotravelError,
    sign_manifest,
    verify_manifest,
)

BODY = {
    "type": MANIFEST_TYPE,
    "version": MANIFEST_VERSION,
    "date": "2020-01-23",
    "suite": "ristretto255-SHA512 VOPRF",
    "public_key": "QsTakwFByJ2d4q8cMeGpa7iyrSWEyrePZReBy0HiTE0=",
    "tags": ["9ok6jbXTb/u66lTUq2ZCPQ==", "yN8lBkgq9M/SYLTA8/5wTg=="],
    "issued_at": "2020-02-01T00:00:00Z",
    "deterministic": True,
}


def test_signed_manifest_verifies_and_returns_its_body() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    assert verify_manifest(sign_manifest(BODY, key), key.public_key()) == BODY


@pytest.mark.parametrize(
    "field, value",
    [("tags", ["AAAAAAAAAAAAAAAAAAAAAA=="]), ("date", "2020-01-24"), ("public_key", "A" * 43 + "=")],
)
def test_a_changed_field_breaks_the_signature(field: str, value: object) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    doc = {**sign_manifest(BODY, key), field: value}
    with pytest.raises(CotravelError, match="does not verify"):
        verify_manifest(doc, key.public_key())


def test_another_signer_and_malformed_documents_are_refused() -> None:
    doc = sign_manifest(BODY, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CotravelError, match="does not verify"):
        verify_manifest(doc, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(CotravelError, match="expected a healthpsi-cotravel document"):
        verify_manifest({**doc, "type": "other"}, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(CotravelError, match="malformed Ed25519 signature"):
        verify_manifest(
            {**BODY, "signature": {"alg": "ES256"}}, ed25519.Ed25519PrivateKey.generate().public_key()
        )
