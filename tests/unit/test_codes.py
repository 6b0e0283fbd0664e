"""Health codes: issue and verify HCP1 payloads, claims, masking, QR round trips, and hostile input."""

from __future__ import annotations

import contextlib
import hashlib
import io
import zlib
from datetime import UTC, date, datetime, timedelta

import base45
import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from coordinator import qr
from coordinator.claims import health_claims, mask_id, mask_name
from crypto import codes
from crypto.drbg import Drbg
from crypto.errors import (
    CodeFormatError,
    CryptoError,
    ExpiredError,
    RevokedError,
    SignatureError,
    UnknownKeyError,
)
from crypto.pki import RevocationList, TrustList, ec_private_key, load_certificate, load_trust_list, spki_kid
from runctx.pki import PkiPaths, create_pki, load_signing_key

NOW = datetime(2020, 2, 10, 8, 0, tzinfo=UTC)
ISSUED = datetime(2020, 2, 10, 6, 0, tzinfo=UTC)
SUBJECT = "410101199003071234"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A deterministic run PKI."""
    paths = PkiPaths(tmp_path_factory.mktemp("run"))
    create_pki(paths, rng=Drbg(b"codes-test"), now=NOW)
    return paths


@pytest.fixture(scope="module")
def signer(pki: PkiPaths) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The code-signing key and its kid."""
    return load_signing_key(pki)


@pytest.fixture(scope="module")
def trust(pki: PkiPaths) -> TrustList:
    """The run's signed trust list."""
    return load_trust_list(pki.trustlist)


def _claims(colour: str = "red", code_id: str = "code-0001", **kw: object) -> dict:
    """A claim set issued at ISSUED."""
    args = dict(code_id=code_id, issuer="411200", colour=colour, policy_version="2020.1",
                name="张小三", subject_id=SUBJECT, issued_at=ISSUED)
    args.update(kw)
    return health_claims(**args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def payload(signer: tuple[ec.EllipticCurvePrivateKey, bytes]) -> str:
    """A valid red code."""
    return codes.issue_code(_claims(), *signer)


def _cose(payload: str) -> codes.CoseSign1:
    return codes.decode_payload(payload).cose


def _wrap(cose_bytes: bytes, prefix: str = codes.HCP_PREFIX) -> str:
    return prefix + codes.b45encode(zlib.compress(cose_bytes))


# ------------------------------------------------------------------------------------------ issuing


def test_issue_and_verify(payload: str, trust: TrustList, signer: tuple) -> None:
    assert payload.startswith("HCP1:")
    verified = codes.verify_payload(payload, trust, NOW)
    assert verified.format == "healthpsi"
    assert verified.kid == signer[1]
    assert verified.code_id == "code-0001"
    assert verified.certificate == {"id": "code-0001", "c": "red", "pv": "2020.1", "n": "张*三",
                                    "sid": "410***********1234"}
    assert verified.issued_at == ISSUED
    assert verified.expires_at == ISSUED + timedelta(hours=24)
    assert verified.issuer == "411200"


def test_issue_is_deterministic_and_layered(payload: str, signer: tuple) -> None:
    assert codes.issue_code(_claims(), *signer) == payload
    cose = _cose(payload)
    assert cose.protected == {1: -7, 4: signer[1]}
    assert cose.unprotected == {}
    assert len(cose.signature) == 64
    raw = codes.decompress(codes.b45decode(payload[5:]))
    assert cbor2.loads(raw).tag == 18
    assert codes.decode_claims(cose.payload) == _claims()


@given(data=st.binary(max_size=600))
def test_b45encode_is_rfc9285(data: bytes) -> None:
    assert codes.b45encode(data) == base45.b45encode(data).decode("ascii")
    assert codes.b45decode(codes.b45encode(data)) == data


@settings(max_examples=60, deadline=None)
@given(protected=st.binary(max_size=300), payload=st.binary(max_size=70000))
def test_sig_structure_is_cbor2s(protected: bytes, payload: bytes) -> None:
    assert codes.sig_structure(protected, payload) == cbor2.dumps(["Signature1", protected, b"", payload])


@settings(max_examples=25, deadline=None)
@given(name=st.text(min_size=1, max_size=40).filter(str.strip), vd=st.none() | st.dates())
def test_issued_envelope_is_the_encoders(signer: tuple, name: str, vd: date | None) -> None:
    """issue_code writes the COSE_Sign1 bytes directly: the same bytes as CoseSign1.encode."""
    payload = codes.issue_code(_claims(name=name, colour_until=vd), *signer)
    raw = codes.decompress(codes.b45decode(payload[5:]))
    assert _cose(payload).encode() == raw


def test_kid_is_sha256_of_spki(signer: tuple, pki: PkiPaths) -> None:
    key, kid = signer
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kid == hashlib.sha256(spki).digest()[:8]
    assert kid == spki_kid(load_certificate(pki.signing_cert).public_key())


def test_health_claims_shape() -> None:
    claims = _claims(colour="yellow", colour_until=date(2020, 2, 17), validity=timedelta(hours=12))
    assert claims[1] == "411200"
    assert claims[6] == int(ISSUED.timestamp())
    assert claims[4] == claims[6] + 12 * 3600
    assert claims[-260][1]["vd"] == "2020-02-17"
    assert claims[-260][1]["c"] == "yellow"
    naive = _claims(issued_at=ISSUED.replace(tzinfo=None))
    assert naive[6] == claims[6]
    with pytest.raises(ValueError, match="colour"):
        _claims(colour="blue")


@pytest.mark.parametrize(
    ("name", "masked"),
    [("张小三", "张*三"), ("张三", "张*"), ("欧阳小明", "欧**明"), ("王", "*"), ("Ann Lee", "A*****e")],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_mask_id() -> None:
    assert mask_id("41010119900307123X") == "410***********123X"
    assert mask_id("410101199003071234") == "410***********1234"
    with pytest.raises(ValueError):
        mask_id("1234567")
    with pytest.raises(ValueError):
        mask_name("  ")


def test_pycose_interoperates(signer: tuple, trust: TrustList, payload: str) -> None:
    """An independent COSE implementation verifies our codes, and we verify what it signs."""
    key, kid = signer
    numbers = key.private_numbers()
    x = numbers.public_numbers.x.to_bytes(32, "big")
    y = numbers.public_numbers.y.to_bytes(32, "big")
    cose = _cose(payload)
    theirs = Sign1Message.from_cose_obj(
        [cose.protected_bytes, dict(cose.unprotected), cose.payload, cose.signature], True
    )
    theirs.key = EC2Key(crv=P256, x=x, y=y)
    assert theirs.verify_signature()
    signed = Sign1Message(phdr={Algorithm: Es256, KID: kid}, payload=cbor2.dumps(_claims(code_id="pycose")))
    signed.key = EC2Key(crv=P256, d=numbers.private_value.to_bytes(32, "big"), x=x, y=y)
    assert codes.verify_payload(_wrap(signed.encode()), trust, NOW).code_id == "pycose"


# ---------------------------------------------------------------------------------------- verifying


def test_expiry_window(payload: str, trust: TrustList) -> None:
    codes.verify_payload(payload, trust, ISSUED)
    codes.verify_payload(payload, trust, ISSUED + timedelta(hours=24))
    with pytest.raises(ExpiredError, match="expired at"):
        codes.verify_payload(payload, trust, ISSUED + timedelta(hours=24, seconds=1))
    with pytest.raises(ExpiredError, match="not yet valid"):
        codes.verify_payload(payload, trust, ISSUED - timedelta(seconds=1))
    naive = (ISSUED + timedelta(hours=1)).replace(tzinfo=None)
    codes.verify_payload(payload, trust, naive)


def test_revoked(payload: str, trust: TrustList) -> None:
    revoked = RevocationList(revoked=frozenset({"code-0001"}), issued_at=NOW)
    with pytest.raises(RevokedError, match="code-0001"):
        codes.verify_payload(payload, trust, NOW, revoked)
    others = RevocationList(revoked=frozenset({"code-0002"}), issued_at=NOW)
    assert codes.verify_payload(payload, trust, NOW, others).code_id == "code-0001"


def test_unknown_signer(trust: TrustList) -> None:
    stranger = ec_private_key(Drbg(b"stranger"))
    payload = codes.issue_code(_claims(), stranger, spki_kid(stranger.public_key()))
    with pytest.raises(UnknownKeyError, match="not in the trust list"):
        codes.verify_payload(payload, trust, NOW)


def test_forged_with_trusted_kid(trust: TrustList, signer: tuple) -> None:
    stranger = ec_private_key(Drbg(b"stranger"))
    payload = codes.issue_code(_claims(colour="green"), stranger, signer[1])
    with pytest.raises(SignatureError, match="does not verify"):
        codes.verify_payload(payload, trust, NOW)


def test_tampered_claims(payload: str, trust: TrustList) -> None:
    cose = _cose(payload)
    claims = codes.decode_claims(cose.payload)
    claims[-260][1]["c"] = "green"
    forged = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, cbor2.dumps(claims),
                             cose.signature)
    with pytest.raises(SignatureError):
        codes.verify_payload(_wrap(forged.encode()), trust, NOW)
    report = codes.check_payload(_wrap(forged.encode()), trust, NOW)
    assert not report.valid and not report.signature_ok and report.claims["hcp"]["c"] == "green"


def test_alg_must_be_protected_es256(payload: str, trust: TrustList) -> None:
    cose = _cose(payload)
    moved = codes.CoseSign1(cbor2.dumps({4: cose.kid}), {4: cose.kid}, {1: -7}, cose.payload, cose.signature)
    with pytest.raises(SignatureError, match="protected header"):
        codes.verify_payload(_wrap(moved.encode()), trust, NOW)


def test_formats_are_bound_to_their_keys(payload: str, trust: TrustList, pki: PkiPaths) -> None:
    """A healthpsi code relabelled as an EU DCC is not accepted under the healthpsi trust entry."""
    relabelled = codes.DCC_PREFIX + payload[len(codes.HCP_PREFIX):]
    with pytest.raises(UnknownKeyError, match="eu-dcc"):
        codes.verify_payload(relabelled, trust, NOW)
    direct = TrustList.from_certificates([load_certificate(pki.signing_cert)])
    assert codes.verify_payload(payload, direct, NOW).format == "healthpsi"


def test_check_payload_reports(payload: str, trust: TrustList) -> None:
    ok = codes.check_payload(payload, trust, NOW)
    assert ok.to_json() == {
        "valid": True, "signature_ok": True, "time_ok": True, "revoked": False, "format": "healthpsi",
        "reason": "valid",
        "claims": {"iss": "411200", "iat": int(ISSUED.timestamp()),
                   "exp": int(ISSUED.timestamp()) + 86400,
                   "hcp": {"id": "code-0001", "c": "red", "pv": "2020.1", "n": "张*三",
                           "sid": "410***********1234"}},
    }
    late = codes.check_payload(payload, trust, NOW + timedelta(days=2))
    assert (late.valid, late.signature_ok, late.time_ok) == (False, True, False)
    assert late.reason.startswith("expired at")
    revoked = codes.check_payload(payload, trust, NOW, RevocationList(frozenset({"code-0001"}), NOW))
    assert (revoked.valid, revoked.revoked, revoked.reason) == (False, True, "code code-0001 is revoked")
    with pytest.raises(CodeFormatError):
        codes.check_payload("HCP1:???", trust, NOW)


def test_healthpsi_claims_need_id_and_colour(signer: tuple, trust: TrustList) -> None:
    claims = _claims()
    del claims[-260][1]["c"]
    with pytest.raises(CodeFormatError, match="colour"):
        codes.verify_payload(codes.issue_code(claims, *signer), trust, NOW)
    with pytest.raises(CodeFormatError, match="expiry"):
        no_exp = codes.issue_code({1: "411200", -260: {1: {"id": "a", "c": "red"}}}, *signer)
        codes.verify_payload(no_exp, trust, NOW)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("", "prefix"),
        ("HC2:NCF", "prefix"),
        ("NCFOXN", "prefix"),
        ("HCP1:abc", "base45"),
        ("HCP1:A", "base45"),
        ("HCP1:" + codes.b45encode(b"not zlib"), "zlib"),
        ("HCP1:" + codes.b45encode(zlib.compress(b"\xff\xff")), "CBOR"),
        ("HCP1:" + codes.b45encode(zlib.compress(cbor2.dumps([1, 2, 3]))), "array of 4"),
        ("HCP1:" + codes.b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(98, [])))), "tag 98"),
        ("HCP1:" + codes.b45encode(zlib.compress(cbor2.dumps([b"", {}, None, b""]))), "detached"),
        ("HCP1:" + codes.b45encode(zlib.compress(cbor2.dumps([b"", {}, b"", b""]) + b"\x00")), "trailing"),
        ("HCP1:" + codes.b45encode(zlib.compress(b"\x00" * 100_000)), "inflates"),
        ("HCP1:" + codes.b45encode(zlib.compress(cbor2.dumps([b"", {}, b"", b""]))[:-3]), "truncated"),
        ("HCP1:" + "A" * 9000, "limit"),
    ],
)
def test_malformed_payloads_name_the_layer(payload: str, match: str, trust: TrustList) -> None:
    with pytest.raises(CodeFormatError, match=match):
        codes.verify_payload(payload, trust, NOW)


def test_missing_kid_and_alg(trust: TrustList) -> None:
    no_kid = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, cbor2.dumps({}), bytes(64)]))
    with pytest.raises(CodeFormatError, match="kid"):
        codes.verify_payload(_wrap(no_kid), trust, NOW)
    no_alg = cbor2.dumps(cbor2.CBORTag(18, [b"", {4: b"12345678"}, cbor2.dumps({}), bytes(64)]))
    with pytest.raises(CodeFormatError, match="alg"):
        codes.verify_payload(_wrap(no_alg, codes.DCC_PREFIX), trust, NOW)


# ---------------------------------------------------------------------------------------------- QR


def test_qr_round_trip(payload: str) -> None:
    png = qr.qr_png(payload)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert qr.read_qr_png(png) == payload


def test_qr_unreadable() -> None:
    with pytest.raises(CodeFormatError, match="not a readable image"):
        qr.read_qr_png(b"definitely not a png")
    blank = io.BytesIO()
    Image.new("L", (64, 64), 255).save(blank, format="PNG")
    with pytest.raises(CodeFormatError, match="no readable QR code"):
        qr.read_qr_png(blank.getvalue())


# ----------------------------------------------------------------------------------------- properties

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FAST
@given(data=st.data())
def test_bit_flips_in_cose_never_verify(data: st.DataObject, payload: str, trust: TrustList) -> None:
    raw = bytearray(codes.decompress(codes.b45decode(payload[5:])))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        codes.verify_payload(_wrap(bytes(raw)), trust, NOW)


def _rejected_or_unchanged(variant: str, payload: str, trust: TrustList) -> None:
    """A damaged payload must fail verification, unless it inflates to the very same signed COSE bytes
    (deflate's final byte has padding bits that do not change the output: encoding slack, not content)."""
    try:
        codes.verify_payload(variant, trust, NOW)
    except CryptoError:
        return
    assert codes.decompress(codes.b45decode(variant[5:])) == codes.decompress(codes.b45decode(payload[5:]))


def test_deflate_padding_slack_keeps_the_signed_bytes(payload: str, trust: TrustList) -> None:
    """Flipping a padding bit of the deflate stream (after the 3 header bits of its one stored block) still
    verifies: it carries the same COSE bytes."""
    raw = bytearray(codes.b45decode(payload[5:]))
    assert raw[2] & 0b111 == 0b001, "one final stored block after the 2-byte zlib header"
    raw[2] ^= 0x80
    variant = "HCP1:" + codes.b45encode(bytes(raw))
    assert codes.verify_payload(variant, trust, NOW).code_id == "code-0001"
    _rejected_or_unchanged(variant, payload, trust)


@_FAST
@given(data=st.data())
def test_bit_flips_in_compressed_never_verify(data: st.DataObject, payload: str, trust: TrustList) -> None:
    raw = bytearray(codes.b45decode(payload[5:]))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    _rejected_or_unchanged("HCP1:" + codes.b45encode(bytes(raw)), payload, trust)


@_FAST
@given(data=st.data())
def test_character_substitutions_never_verify(data: st.DataObject, payload: str, trust: TrustList) -> None:
    index = data.draw(st.integers(0, len(payload) - 1))
    char = data.draw(st.characters(codec="ascii").filter(lambda c: c != payload[index]))
    _rejected_or_unchanged(payload[:index] + char + payload[index + 1:], payload, trust)


@_FAST
@given(data=st.data())
def test_truncated_payloads_are_format_errors(data: st.DataObject, payload: str, trust: TrustList) -> None:
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(CodeFormatError):
        codes.verify_payload(payload[:cut], trust, NOW)


_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


@_FAST
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet=_B45, max_size=300).map(lambda t: "HCP1:" + t),
                      st.binary(max_size=300).map(lambda b: "HC1:" + codes.b45encode(b)),
                      st.binary(max_size=300).map(lambda b: "HCP1:" + codes.b45encode(zlib.compress(b)))))
def test_garbage_payloads_are_format_errors(text: str, trust: TrustList) -> None:
    with pytest.raises(CodeFormatError):
        codes.verify_payload(text, trust, NOW)


_CBOR = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=16) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-300, 10) | st.text(max_size=4),
                                                                 inner, max_size=5),
    max_leaves=12,
)


@_FAST
@given(item=_CBOR, tag=st.sampled_from([None, 18, 61]))
def test_structured_garbage_raises_typed_errors(item: object, tag: int | None, trust: TrustList) -> None:
    raw = cbor2.dumps(item if tag is None else cbor2.CBORTag(tag, item))
    with pytest.raises(CryptoError):
        codes.verify_payload(_wrap(raw), trust, NOW)


@_FAST
@given(headers=st.dictionaries(st.integers(-40, 10), _CBOR, max_size=4), body=_CBOR,
       signature=st.binary(max_size=80))
def test_random_cose_messages_never_verify(
    headers: dict, body: object, signature: bytes, trust: TrustList
) -> None:
    cose = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps(headers), headers, cbor2.dumps(body), signature]))
    with pytest.raises(CryptoError):
        codes.verify_payload(_wrap(cose), trust, NOW)


@_FAST
@given(data=st.binary(max_size=400))
def test_decoders_raise_only_code_format_errors(data: bytes) -> None:
    for decode in (codes.decompress, codes.decode_cose, codes.decode_claims, qr.read_qr_png):
        with contextlib.suppress(CodeFormatError):  # anything else fails the test
            decode(data)

