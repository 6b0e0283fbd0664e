"""The README's example of reading a health code with standard libraries runs as printed."""

from __future__ import annotations

import contextlib
import io
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature

from coordinator.claims import health_claims
from crypto import codes
from crypto.drbg import Drbg
from runctx.pki import PkiPaths, create_pki, load_signing_key

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2020, 2, 10, 8, 0, tzinfo=UTC)


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- example: read-a-code -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its read-a-code example"
    return match.group(1)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    paths = PkiPaths(tmp_path_factory.mktemp("run"))
    create_pki(paths, rng=Drbg(b"readme-example"), now=NOW, issuers=["410100"])
    key, kid = load_signing_key(paths)
    claims = health_claims(code_id="c-1", issuer="410100", colour="yellow", policy_version="1",
                           name="张小三", subject_id="410101199003071234", issued_at=NOW)
    return codes.issue_code(claims, key, kid), paths.trustlist


def test_readme_example_reads_a_real_code(issued: tuple[str, Path]) -> None:
    payload, trustlist = issued
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(_example(), {"payload": payload, "trustlist_path": str(trustlist)})
    colour, name, expiry = out.getvalue().split()
    assert (colour, name) == ("yellow", "张*三")
    assert int(expiry) == int(NOW.timestamp()) + 24 * 3600


def test_readme_example_refuses_a_forged_code(issued: tuple[str, Path]) -> None:
    payload, trustlist = issued
    cose = codes.decode_payload(payload).cose
    forged_claims = cbor2.dumps({**codes.decode_claims(cose.payload), 4: 2**31}, canonical=True)
    forged = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, forged_claims,
                             cose.signature)
    forged_payload = "HCP1:" + codes.b45encode(zlib.compress(forged.encode()))
    with pytest.raises(InvalidSignature):
        exec(_example(), {"payload": forged_payload, "trustlist_path": str(trustlist)})
