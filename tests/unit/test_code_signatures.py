"""ES256 rules per format: healthpsi codes are P-256 and low-S only; EU DCCs may be signed with P-384."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from crypto import codes
from crypto.errors import SignatureError
from crypto.pki import FORMAT_DCC, FORMAT_HEALTHPSI

KID = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def _sign1(key: ec.EllipticCurvePrivateKey, payload: bytes, *, high_s: bool = False) -> codes.CoseSign1:
    """A COSE_Sign1 ES256 message signed with `key` (any curve), its s in the form asked for."""
    protected = cbor2.dumps({1: -7, 4: KID}, canonical=True)
    der = key.sign(codes.sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    order = codes.P256_ORDER if isinstance(key.curve, ec.SECP256R1) else None
    if order is not None:
        s = max(s, order - s) if high_s else min(s, order - s)
    size = (key.curve.key_size + 7) // 8
    message = cbor2.dumps(
        cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(size, "big") + s.to_bytes(size, "big")])
    )
    return codes.decode_cose(message)


def test_eu_dcc_accepts_es256_with_a_p384_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cose = _sign1(key, cbor2.dumps({1: "AT"}))
    codes.verify_signature(cose, key.public_key(), FORMAT_DCC)


def test_eu_dcc_p384_signature_over_other_bytes_fails() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cose = _sign1(key, cbor2.dumps({1: "AT"}))
    forged = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, b"\xa0", cose.signature)
    with pytest.raises(SignatureError, match="does not verify"):
        codes.verify_signature(forged, key.public_key(), FORMAT_DCC)


def test_healthpsi_codes_refuse_a_p384_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cose = _sign1(key, cbor2.dumps({1: "x"}))
    with pytest.raises(SignatureError, match="P-256 key"):
        codes.verify_signature(cose, key.public_key(), FORMAT_HEALTHPSI)


def test_healthpsi_codes_refuse_high_s_but_eu_dcc_keeps_accepting_it() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    low = _sign1(key, b"\xa1\x01\x02")
    high = _sign1(key, b"\xa1\x01\x02", high_s=True)
    codes.verify_signature(low, key.public_key(), FORMAT_HEALTHPSI)
    with pytest.raises(SignatureError, match="high-S"):
        codes.verify_signature(high, key.public_key(), FORMAT_HEALTHPSI)
    codes.verify_signature(high, key.public_key(), FORMAT_DCC)


def test_issued_codes_are_low_s() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for n in range(40):
        payload = codes.issue_code({1: "healthpsi", 7: f"code-{n}"}, key, KID)
        cose = codes.decode_payload(payload).cose
        s = int.from_bytes(cose.signature[32:], "big")
        assert s <= codes.P256_ORDER // 2
        codes.verify_signature(cose, key.public_key(), FORMAT_HEALTHPSI)
