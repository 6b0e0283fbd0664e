"""EU Digital COVID Certificate test cases (dgc-testdata): every expectation the verifier can check.

Each case states, per step, whether it must succeed; a missing key means the step is not tested by that case.
Checked here: EXPECTEDUNPREFIX, EXPECTEDB45DECODE, EXPECTEDCOMPRESSION, EXPECTEDVERIFY (with the case's
signer certificate), EXPECTEDEXPIRATIONCHECK (at VALIDATIONCLOCK), EXPECTEDDECODE, EXPECTEDVALIDJSON,
EXPECTEDPICTUREDECODE, and the whole chain from the QR payload where a case fixes both signature and clock.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import pytest

from coordinator import qr
from crypto import codes
from crypto.errors import CodeFormatError, CryptoError, ExpiredError
from crypto.pki import FORMAT_DCC, TrustList, parse_certificate

DCC = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "dcc"
CASES = sorted(DCC.glob("*/2DCode/raw/*.json"))


@cache
def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _name(path: Path) -> str:
    return f"{path.parts[-4]}/{path.stem}"


def _with(expectation: str, *fields: str) -> list[Any]:
    """pytest params (case, expected) for the cases that test `expectation` and carry `fields`."""
    return [
        pytest.param(_load(p), _load(p)["EXPECTEDRESULTS"][expectation], id=_name(p))
        for p in CASES
        if expectation in _load(p)["EXPECTEDRESULTS"] and all(f in _load(p) for f in fields)
    ]


def _trust(case: dict[str, Any]) -> TrustList:
    return TrustList.from_certificates([parse_certificate(case["TESTCTX"]["CERTIFICATE"])])


def _clock(case: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(case["TESTCTX"]["VALIDATIONCLOCK"])


def test_the_cases_are_there() -> None:
    assert len(CASES) >= 60
    algs = {codes.decode_cose(bytes.fromhex(_load(p)["COSE"])).alg for p in CASES
            if _load(p)["EXPECTEDRESULTS"].get("EXPECTEDVERIFY") and "COSE" in _load(p)}
    assert {codes.ALG_ES256, codes.ALG_PS256} <= algs


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDUNPREFIX", "PREFIX", "BASE45"))
def test_unprefix(case: dict[str, Any], expected: bool) -> None:
    if expected:
        assert codes.unprefix(case["PREFIX"]) == (FORMAT_DCC, case["BASE45"])
    else:
        with pytest.raises(CodeFormatError, match="prefix"):
            codes.unprefix(case["PREFIX"])


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDB45DECODE", "BASE45", "COMPRESSED"))
def test_base45(case: dict[str, Any], expected: bool) -> None:
    if expected:
        assert codes.b45decode(case["BASE45"]) == bytes.fromhex(case["COMPRESSED"])
    else:
        with pytest.raises(CodeFormatError, match="base45"):
            codes.b45decode(case["BASE45"])


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDCOMPRESSION", "COMPRESSED", "COSE"))
def test_compression(case: dict[str, Any], expected: bool) -> None:
    if expected:
        assert codes.decompress(bytes.fromhex(case["COMPRESSED"])) == bytes.fromhex(case["COSE"])
    else:
        with pytest.raises(CodeFormatError, match="zlib"):
            codes.decompress(bytes.fromhex(case["COMPRESSED"]))


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDVERIFY", "COSE"))
def test_verify(case: dict[str, Any], expected: bool) -> None:
    trust = _trust(case)
    if expected:
        codes.verify_cose(codes.decode_cose(bytes.fromhex(case["COSE"])), trust, FORMAT_DCC)
    else:
        with pytest.raises(CryptoError) as info:
            codes.verify_cose(codes.decode_cose(bytes.fromhex(case["COSE"])), trust, FORMAT_DCC)
        assert not isinstance(info.value, ExpiredError)


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDEXPIRATIONCHECK", "COSE"))
def test_expiration(case: dict[str, Any], expected: bool) -> None:
    claims = codes.decode_claims(codes.decode_cose(bytes.fromhex(case["COSE"])).payload)
    if expected:
        codes.check_time(claims, _clock(case))
    else:
        with pytest.raises(ExpiredError):
            codes.check_time(claims, _clock(case))


def _decoded_certificate(case: dict[str, Any]) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """(claims, certificate) decoded from the case's QR payload."""
    claims = codes.decode_claims(codes.decode_payload(case["PREFIX"]).cose.payload)
    return claims, codes.health_certificate(claims, FORMAT_DCC)


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDDECODE", "PREFIX", "CBOR"))
def test_decode(case: dict[str, Any], expected: bool) -> None:
    if expected:
        claims, certificate = _decoded_certificate(case)
        reference = cbor2.loads(bytes.fromhex(case["CBOR"]))  # some countries give the DGC, some the claims
        assert reference in (claims, certificate)
    else:
        with pytest.raises(CodeFormatError):
            _decoded_certificate(case)


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDVALIDJSON", "PREFIX", "JSON"))
def test_valid_json(case: dict[str, Any], expected: bool) -> None:
    claims, _ = _decoded_certificate(case)
    assert (codes.claims_json(claims, FORMAT_DCC)["dgc"] == case["JSON"]) is expected


@pytest.mark.parametrize(("case", "expected"), _with("EXPECTEDPICTUREDECODE", "2DCODE", "PREFIX"))
def test_picture_decode(case: dict[str, Any], expected: bool) -> None:
    png = base64.b64decode(case["2DCODE"])
    if expected:
        assert qr.read_qr_png(png) == case["PREFIX"]
    else:
        with pytest.raises(CodeFormatError):
            qr.read_qr_png(png)


def _full_chain_cases() -> list[Any]:
    params = []
    for p in CASES:
        case, expected = _load(p), _load(p)["EXPECTEDRESULTS"]
        if {"EXPECTEDVERIFY", "EXPECTEDEXPIRATIONCHECK"} <= set(expected) and "PREFIX" in case:
            valid = expected["EXPECTEDVERIFY"] and expected["EXPECTEDEXPIRATIONCHECK"]
            params.append(pytest.param(case, valid, id=_name(p)))
    return params


@pytest.mark.parametrize(("case", "valid"), _full_chain_cases())
def test_whole_chain_from_payload(case: dict[str, Any], valid: bool) -> None:
    report = codes.check_payload(case["PREFIX"], _trust(case), _clock(case))
    assert report.valid is valid
    assert report.format == "eu-dcc"
    assert report.signature_ok is case["EXPECTEDRESULTS"]["EXPECTEDVERIFY"]
    assert report.time_ok is case["EXPECTEDRESULTS"]["EXPECTEDEXPIRATIONCHECK"]
    if valid:
        verified = codes.verify_payload(case["PREFIX"], _trust(case), _clock(case))
        assert codes.claims_json(verified.claims, FORMAT_DCC) == report.claims
        entries = [e for group in ("v", "t", "r") for e in verified.certificate.get(group, [])]
        assert verified.code_id == entries[0]["ci"]  # what a revocation list would name
    else:
        with pytest.raises(CryptoError):
            codes.verify_payload(case["PREFIX"], _trust(case), _clock(case))


@pytest.mark.parametrize("name", ["CO18", "CO19", "CO20", "CO21", "CO22", "CO23"])
def test_kid_placement(name: str) -> None:
    """Protected kid wins over the unprotected one; an unprotected kid alone is used."""
    case = _load(DCC / "common" / "2DCode" / "raw" / f"{name}.json")
    cose = codes.decode_cose(bytes.fromhex(case["COSE"]))
    trusted = _trust(case).keys
    dcc_kid = next(k.kid for k in trusted if k.format == FORMAT_DCC)
    assert (cose.kid == dcc_kid) is case["EXPECTEDRESULTS"]["EXPECTEDVERIFY"]
