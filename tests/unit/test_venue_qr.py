"""The signed venue QR: made with the venue agency's own key (certified by the run's root), read back, and
refused with the reason when it is forged, altered or not a venue code at all."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from crypto import codes
from crypto.pki import ec_private_key, load_certificate
from runctx.pki import PkiPaths, create_pki
from service.venue.keys import PREFIX, Venue, VenueKey, VenueKeyError, VenueQrError, venue_key

VENUE = Venue("compound-411202-v0001", "建设路小区", "compound", "411202")
NOW = dt.datetime(2020, 2, 10, 9, tzinfo=dt.UTC)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    create_pki(PkiPaths(tmp_path))
    return tmp_path


def test_the_key_comes_with_the_pki_private_and_certified_by_the_root(run: Path) -> None:
    key = venue_key(run)
    assert stat.S_IMODE(PkiPaths(run).venue_signing_key.stat().st_mode) == 0o600
    root = load_certificate(PkiPaths(run).root_cert)
    key.certificate.verify_directly_issued_by(root)
    assert venue_key(run).kid == key.kid  # the same key on every later use


def test_a_run_without_the_key_or_with_a_foreign_certificate_is_refused(
    run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other")
    create_pki(PkiPaths(other))
    paths = PkiPaths(run)
    paths.venue_signing_cert.write_bytes(PkiPaths(other).venue_signing_cert.read_bytes())
    with pytest.raises(VenueKeyError, match="not signed by the run's root"):
        venue_key(run)
    paths.venue_signing_key.unlink()
    with pytest.raises(VenueKeyError, match="healthpsi keys init"):
        venue_key(run)


def test_a_venue_qr_reads_back_as_its_venue(run: Path) -> None:
    key = venue_key(run)
    payload = key.sign(VENUE, NOW)
    assert payload.startswith(PREFIX)
    assert key.read(payload) == VENUE


def test_a_qr_signed_with_another_key_is_refused(run: Path) -> None:
    key = venue_key(run)
    other = VenueKey(ec_private_key(), key.certificate)
    with pytest.raises(VenueQrError) as refused:
        key.read(other.sign(VENUE, NOW))
    assert refused.value.reason == "unknown-key"


def test_a_qr_claiming_the_agencys_kid_with_another_key_is_refused(run: Path) -> None:
    key = venue_key(run)
    claims = {
        codes.CLAIM_ISS: "healthpsi venues",
        2: VENUE.venue_id,
        6: 0,
        "v": {"n": "x", "k": "market", "r": "1"},
    }
    forged = PREFIX + codes.b45encode(codes.sign_claims(claims, ec_private_key(), key.kid))
    with pytest.raises(VenueQrError) as refused:
        key.read(forged)
    assert refused.value.reason == "bad-signature"


def test_an_altered_qr_is_refused(run: Path) -> None:
    key = venue_key(run)
    cose = codes.decode_cose(codes.b45decode(key.sign(VENUE, NOW)[len(PREFIX) :]))
    payload = cose.payload.replace(b"v0001", b"v0002")
    assert payload != cose.payload
    altered = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, payload, cose.signature)
    with pytest.raises(VenueQrError) as refused:
        key.read(PREFIX + codes.b45encode(altered.encode()))
    assert refused.value.reason == "bad-signature"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("HCP1:6BFOXN", "health-code"),
        ("https://example.org/", "not-a-venue-code"),
        (PREFIX + "%%", "not-a-venue-code"),
    ],
)
def test_text_that_is_no_venue_code_is_refused(run: Path, text: str, reason: str) -> None:
    with pytest.raises(VenueQrError) as refused:
        venue_key(run).read(text)
    assert refused.value.reason == reason
