"""`healthpsi verify` and `healthpsi keys init` through the command line."""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from coordinator import qr
from coordinator.claims import health_claims
from crypto import codes
from crypto.pki import load_certificate, make_revocations
from healthpsi.cli import app
from runctx.pki import PkiPaths, init_keys, load_signing_key, write_revocations

AS_OF = "2020-02-10"
ISSUED = datetime(2020, 2, 10, 6, 0, tzinfo=UTC)
AT = "2020-02-10T09:00:00Z"
KEYS = {"valid", "signature_ok", "time_ok", "revoked", "format", "reason", "claims"}
DCC = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "dcc"

runner = CliRunner()


def _run(*args: str) -> tuple[int, dict]:
    """Invoke `healthpsi verify ... --json`; return the exit code and the parsed report."""
    result = runner.invoke(app, ["verify", *args, "--json"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def _scenario(run: Path, seed: int = 7) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    scenario = {"preset": "city-20k", "seed": seed, "deterministic": True, "as_of": AS_OF}
    (run / "scenario.json").write_text(json.dumps(scenario))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A run directory with its PKI made by `keys init`."""
    directory = _scenario(tmp_path_factory.mktemp("run"))
    result = runner.invoke(app, ["keys", "init", "--run", str(directory)])
    assert result.exit_code == 0, result.output
    return PkiPaths(directory)


def _code(
    run: PkiPaths, code_id: str = "c-1", colour: str = "yellow", *, issuer: str | None = None,
    signer: str | None = None, issued_at: datetime = ISSUED,
) -> str:
    """A code claiming `issuer` (default: the home issuer), signed by the key of `signer` (default: same)."""
    claims = health_claims(code_id=code_id, issuer=issuer or run.home_issuer, colour=colour,
                           policy_version="2020.1", name="李小四", subject_id="11010519491231002X",
                           issued_at=issued_at)
    return codes.issue_code(claims, *load_signing_key(run, signer or issuer))


def test_valid_code(run: PkiPaths) -> None:
    status, report = _run(_code(run), "--trust", str(run.trustlist), "--at", AT)
    assert status == 0
    assert set(report) == KEYS
    assert (report["valid"], report["signature_ok"], report["time_ok"], report["revoked"]) == (
        True, True, True, False)
    assert (report["format"], report["reason"]) == ("healthpsi", "valid")
    assert report["claims"]["hcp"] == {"id": "c-1", "c": "yellow", "pv": "2020.1", "n": "李*四",
                                       "sid": "110***********002X"}


def test_human_output(run: PkiPaths) -> None:
    result = runner.invoke(app, ["verify", _code(run), "--trust", str(run.trustlist), "--at", AT])
    assert result.exit_code == 0
    assert "VALID" in result.stdout and "李*四" in result.stdout and "yellow" in result.stdout


def test_tampered_code(run: PkiPaths) -> None:
    cose = codes.decode_payload(_code(run)).cose
    claims = codes.decode_claims(cose.payload)
    claims[-260][1]["c"] = "green"
    forged = codes.CoseSign1(cose.protected_bytes, cose.protected, cose.unprotected, cbor2.dumps(claims),
                             cose.signature)
    payload = codes.HCP_PREFIX + codes.b45encode(zlib.compress(forged.encode()))
    status, report = _run(payload, "--trust", str(run.trustlist), "--at", AT)
    assert status == 1
    assert not report["valid"] and not report["signature_ok"] and report["time_ok"]
    assert "signature does not verify" in report["reason"]


def test_expired_and_not_yet_valid(run: PkiPaths) -> None:
    later = (ISSUED + timedelta(hours=25)).isoformat()
    status, report = _run(_code(run), "--trust", str(run.trustlist), "--at", later)
    assert status == 1
    assert report["signature_ok"] and not report["time_ok"] and report["reason"].startswith("expired at")
    status, report = _run(_code(run), "--trust", str(run.trustlist), "--at", "2020-02-09T00:00:00")
    assert status == 1 and report["reason"].startswith("not yet valid")


def test_revoked_code(run: PkiPaths, tmp_path: Path) -> None:
    # a copy of the run's PKI, so revoking here leaves the shared fixture's list empty
    copy = PkiPaths(_scenario(tmp_path))
    init_keys(copy.run_dir)
    write_revocations(copy, ["c-9"], issued_at=ISSUED)
    status, report = _run(_code(copy, "c-9"), "--trust", str(copy.trustlist), "--revocations",
                          str(copy.revocations), "--at", AT)
    assert status == 1
    assert report["revoked"] and report["signature_ok"] and report["time_ok"]
    assert report["reason"] == "code c-9 is revoked"
    status, _ = _run(_code(copy, "c-8"), "--trust", str(copy.trustlist), "--revocations",
                     str(copy.revocations), "--at", AT)
    assert status == 0


def test_unknown_signer(run: PkiPaths, tmp_path: Path) -> None:
    other = PkiPaths(_scenario(tmp_path, seed=8))
    init_keys(other.run_dir)
    status, report = _run(_code(other), "--trust", str(run.trustlist), "--at", AT)
    assert status == 1 and "not in the trust list" in report["reason"]


def test_qr_png_and_text_files(run: PkiPaths, tmp_path: Path) -> None:
    payload = _code(run)
    png = tmp_path / "code.png"
    png.write_bytes(qr.qr_png(payload))
    status, report = _run("--file", str(png), "--trust", str(run.trustlist), "--at", AT)
    assert status == 0 and report["claims"]["hcp"]["id"] == "c-1"
    text = tmp_path / "code.txt"
    text.write_text(payload + "\n")
    assert _run("--file", str(text), "--trust", str(run.trustlist), "--at", AT)[0] == 0


def test_cert_instead_of_trust_list(run: PkiPaths) -> None:
    status, report = _run(_code(run), "--cert", str(run.signing_cert), "--at", AT)
    assert status == 0 and report["valid"]
    status, report = _run(_code(run), "--cert", str(run.root_cert), "--at", AT)
    assert status == 1 and "not in the trust list" in report["reason"]


def test_eu_dcc_with_inline_certificate() -> None:
    case = json.loads((DCC / "DE" / "2DCode" / "raw" / "1.json").read_text())
    ctx = case["TESTCTX"]
    status, report = _run(case["PREFIX"], "--cert", ctx["CERTIFICATE"], "--at", ctx["VALIDATIONCLOCK"])
    assert status == 0 and report["format"] == "eu-dcc"
    assert report["claims"]["dgc"]["nam"]["fn"] == "Mustermann"
    status, report = _run(case["PREFIX"], "--cert", ctx["CERTIFICATE"], "--at", "2023-01-01T00:00:00Z")
    assert status == 1 and not report["time_ok"]


def test_pinned_root(run: PkiPaths, tmp_path: Path) -> None:
    assert _run(_code(run), "--trust", str(run.trustlist), "--root", str(run.root_cert), "--at", AT)[0] == 0
    other = PkiPaths(_scenario(tmp_path, seed=9))
    init_keys(other.run_dir)
    pinned = ["--root", str(other.root_cert)]
    status, report = _run(_code(run), "--trust", str(run.trustlist), *pinned, "--at", AT)
    assert status == 2 and "pinned root" in report["reason"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["HCP1:%%%", "--trust", "{trust}"], "base45"),
        (["garbage", "--trust", "{trust}"], "prefix"),
        (["{code}"], "exactly one of --trust or --cert"),
        (["{code}", "--trust", "{trust}", "--cert", "{cert}"], "exactly one of --trust or --cert"),
        (["--trust", "{trust}"], "exactly one of CODE or --file"),
        (["{code}", "--file", "{trust}", "--trust", "{trust}"], "exactly one of CODE or --file"),
        (["{code}", "--trust", "{trust}", "--at", "yesterday"], "--at"),
        (["{code}", "--trust", "{missing}"], "cannot read"),
        (["{code}", "--trust", "{revocations}"], "no pinned root"),
        (["{code}", "--trust", "{revocations}", "--root-fingerprint", "{fingerprint}"],
         "expected a healthpsi-trustlist"),
        (["{code}", "--trust", "{trust}", "--root-fingerprint", "abc"], "--root-fingerprint"),
        (["{code}", "--cert", "{cert}", "--revocations", "{revocations}"], "needs --trust"),
        (["{code}", "--cert", "not-a-certificate"], "--cert"),
        (["--file", "{missing}", "--trust", "{trust}"], "cannot read"),
    ],
)
def test_unusable_input(run: PkiPaths, args: list[str], reason: str) -> None:
    values = {"trust": str(run.trustlist), "cert": str(run.signing_cert), "code": _code(run),
              "revocations": str(run.revocations), "missing": str(run.pki_dir / "missing.json"),
              "fingerprint": run.root_fingerprint.read_text().strip()}
    status, report = _run(*[a.format(**values) for a in args])
    assert status == 2
    assert set(report) == KEYS and report["valid"] is False and report["claims"] is None
    assert reason in report["reason"]


def test_tampered_trust_list_is_unusable(run: PkiPaths, tmp_path: Path) -> None:
    doc = json.loads(run.trustlist.read_text())
    doc["issuer"] = "impostor"
    forged = tmp_path / "trustlist.json"
    forged.write_text(json.dumps(doc))
    pin = run.root_fingerprint.read_text().strip()
    status, report = _run(_code(run), "--trust", str(forged), "--root-fingerprint", pin, "--at", AT)
    assert status == 2 and "does not verify" in report["reason"]


def test_unusable_input_without_json(run: PkiPaths) -> None:
    result = runner.invoke(app, ["verify", "HCP1:%%%", "--trust", str(run.trustlist)])
    assert result.exit_code == 2 and "unusable input" in result.stderr and result.stdout == ""


# ------------------------------------------------------------------------------------------ keys init


def _tree(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "pki").rglob("*")) if p.is_file()}


def test_keys_init_is_reproducible_from_the_scenario(run: PkiPaths, tmp_path: Path) -> None:
    again = _scenario(tmp_path / "again")
    assert runner.invoke(app, ["keys", "init", "--run", str(again)]).exit_code == 0
    assert _tree(again) == _tree(run.run_dir)
    trust = json.loads(run.trustlist.read_text())
    assert trust["issued_at"] == "2020-02-10T00:00:00Z"


def test_keys_init_refuses_to_overwrite(tmp_path: Path) -> None:
    run = _scenario(tmp_path)
    assert runner.invoke(app, ["keys", "init", "--run", str(run)]).exit_code == 0
    before = _tree(run)
    (run / "scenario.json").write_text(json.dumps({"seed": 99, "deterministic": True, "as_of": AS_OF}))
    refused = runner.invoke(app, ["keys", "init", "--run", str(run)])
    assert refused.exit_code == 1 and "--force" in refused.stderr
    assert _tree(run) == before
    assert runner.invoke(app, ["keys", "init", "--run", str(run), "--force"]).exit_code == 0
    assert _tree(run)["pki/root.key"] != before["pki/root.key"]


def test_keys_init_without_scenario_uses_system_randomness(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        run.mkdir()
        assert runner.invoke(app, ["keys", "init", "--run", str(run)]).exit_code == 0
    key = "pki/issuers/411200/signing.key"
    assert _tree(a)[key] != _tree(b)[key]
    assert set(_tree(a)) == set(_tree(b))


def test_keys_init_rejects_a_bad_scenario(tmp_path: Path) -> None:
    (tmp_path / "scenario.json").write_text(json.dumps({"seed": "seven"}))
    result = runner.invoke(app, ["keys", "init", "--run", str(tmp_path)])
    assert result.exit_code == 1 and "seed" in result.stderr
    assert not (tmp_path / "pki").exists()


def test_help_has_examples() -> None:
    for command in (["verify", "--help"], ["keys", "init", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Example" in result.stdout


# ------------------------------------------------------------------------------- pinned, fresh lists


def _pin(run: PkiPaths) -> list[str]:
    return ["--root-fingerprint", run.root_fingerprint.read_text().strip()]


def test_root_fingerprint_is_sha256_of_the_root_der(run: PkiPaths) -> None:
    der = load_certificate(run.root_cert).public_bytes(serialization.Encoding.DER)
    assert run.root_fingerprint.read_text().strip() == hashlib.sha256(der).hexdigest()
    assert _run(_code(run), "--trust", str(run.trustlist), *_pin(run), "--at", AT)[0] == 0


def test_substituted_trust_list_is_refused(run: PkiPaths, tmp_path: Path) -> None:
    # an attacker's own root, code-signing key and self-consistent trust list, placed where the verifier reads
    attacker = PkiPaths(_scenario(tmp_path / "attacker", seed=11))
    init_keys(attacker.run_dir)
    forged = _code(attacker, colour="green")
    status, report = _run(forged, "--trust", str(attacker.trustlist), *_pin(run), "--at", AT)
    assert status == 2 and "not the pinned" in report["reason"] and "substituted" in report["reason"]
    # its list alone, without a pin, is no longer enough either
    lone = tmp_path / "lone" / "trustlist.json"
    lone.parent.mkdir()
    lone.write_bytes(attacker.trustlist.read_bytes())
    status, report = _run(forged, "--trust", str(lone), "--at", AT)
    assert status == 2 and "no pinned root" in report["reason"]


def test_stale_trust_list_is_refused(run: PkiPaths) -> None:
    doc = json.loads(run.trustlist.read_text())
    until = datetime.fromisoformat(doc["issued_at"]) + timedelta(seconds=doc["max_age"])
    late = (until + timedelta(seconds=1)).isoformat()
    status, report = _run(_code(run, issued_at=until - timedelta(hours=1)), "--trust", str(run.trustlist),
                          "--at", late)
    assert status == 2 and "trust list is stale" in report["reason"] and "max_age" in report["reason"]


def test_rolled_back_revocation_list_is_refused(tmp_path: Path) -> None:
    run = PkiPaths(_scenario(tmp_path / "run"))
    init_keys(run.run_dir)
    old = tmp_path / "old-revocations.json"
    old.write_bytes(run.revocations.read_bytes())  # issued at keys init, revokes nothing
    later = ISSUED + timedelta(days=3)
    write_revocations(run, ["c-9"], issued_at=later)
    code = _code(run, "c-9", issued_at=later)
    at = (later + timedelta(hours=1)).isoformat()
    status, report = _run(code, "--trust", str(run.trustlist), "--revocations", str(run.revocations),
                          "--at", at)
    assert status == 1 and report["revoked"]
    status, report = _run(code, "--trust", str(run.trustlist), "--revocations", str(old), "--at", at)
    assert status == 2 and "revocation list of issuer 411200 is stale" in report["reason"]


# ------------------------------------------------------------------------------------- several issuers

SANMENXIA, ZHENGZHOU = "411200", "410100"


@pytest.fixture(scope="module")
def national(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A run whose PKI has two issuing authorities under one national root."""
    directory = _scenario(tmp_path_factory.mktemp("national"))
    result = runner.invoke(app, ["keys", "init", "--run", str(directory), "--issuer", SANMENXIA,
                                 "--issuer", ZHENGZHOU])
    assert result.exit_code == 0, result.output
    return PkiPaths(directory)


def test_one_trust_list_names_every_issuer(national: PkiPaths) -> None:
    doc = json.loads(national.trustlist.read_text())
    assert [k["issuer"] for k in doc["keys"]] == [SANMENXIA, ZHENGZHOU]
    assert national.home_issuer == SANMENXIA and national.issuers() == sorted([SANMENXIA, ZHENGZHOU])
    for region in (SANMENXIA, ZHENGZHOU):
        revocations = json.loads((national.issuer_dir(region) / "revocations.json").read_text())
        assert revocations["issuer"] == region and revocations["max_age"] > 0


def test_codes_of_every_listed_issuer_are_accepted(national: PkiPaths) -> None:
    for region in (SANMENXIA, ZHENGZHOU):
        status, report = _run(_code(national, issuer=region), "--trust", str(national.trustlist), "--at", AT)
        assert status == 0 and report["claims"]["iss"] == region


def test_code_signed_under_another_issuers_name_is_refused(national: PkiPaths) -> None:
    code = _code(national, issuer=SANMENXIA, signer=ZHENGZHOU)
    status, report = _run(code, "--trust", str(national.trustlist), "--at", AT)
    assert status == 1 and not report["signature_ok"]
    assert report["reason"].startswith(f"code claims issuer '{SANMENXIA}' but is signed by the key of issuer "
                                       f"{ZHENGZHOU}")


def test_code_of_an_unlisted_issuer_is_refused(national: PkiPaths, tmp_path: Path) -> None:
    beijing = PkiPaths(_scenario(tmp_path / "beijing", seed=12))
    init_keys(beijing.run_dir, issuers=["110000"])
    status, report = _run(_code(beijing), "--trust", str(national.trustlist), "--at", AT)
    assert status == 1 and report["reason"].startswith("issuer 110000 is not on the trust list")
    # and the other way: a verifier that trusts only Beijing refuses Sanmenxia's codes
    status, report = _run(_code(national), "--trust", str(beijing.trustlist), "--at", AT)
    assert status == 1
    assert report["reason"].startswith("issuer 411200 is not on the trust list (it lists 110000)")


def test_revocation_lists_are_per_issuer(national: PkiPaths, tmp_path: Path) -> None:
    run = PkiPaths(_scenario(tmp_path / "run"))
    init_keys(run.run_dir, issuers=[ZHENGZHOU, SANMENXIA])  # this coordinator issues for Zhengzhou
    write_revocations(run, ["c-9"], issued_at=ISSUED)
    lists = [arg for r in (SANMENXIA, ZHENGZHOU) for arg in ("--revocations", str(run.issuer_dir(r) /
                                                                                     "revocations.json"))]
    trusted = ["--trust", str(run.trustlist), *lists, "--at", AT]
    status, report = _run(_code(run, "c-9", issuer=ZHENGZHOU), *trusted)
    assert status == 1 and report["revoked"]
    status, report = _run(_code(run, "c-9", issuer=SANMENXIA), *trusted)
    assert status == 0 and not report["revoked"]  # Zhengzhou cannot revoke Sanmenxia's codes
    # a list naming Sanmenxia but signed with Zhengzhou's key is refused
    zhengzhou_key = load_signing_key(run, ZHENGZHOU)[0]
    forged = make_revocations(["c-1"], zhengzhou_key, issued_at=ISSUED, issuer=SANMENXIA)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    status, report = _run(_code(run, issuer=SANMENXIA), "--trust", str(run.trustlist), "--revocations",
                          str(path), "--at", AT)
    assert status == 2 and f"signed by the key of issuer '{ZHENGZHOU}'" in report["reason"]


def test_keys_init_rejects_a_bad_issuer(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "init", "--run", str(tmp_path), "--issuer", "zhengzhou"])
    assert result.exit_code == 2 and "--issuer" in result.stderr and "region code" in result.stderr
    assert not (tmp_path / "pki").exists()
