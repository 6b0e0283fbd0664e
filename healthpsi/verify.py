"""`healthpsi verify`: check a health code offline against a trust list or a certificate."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from cryptography import x509
from rich.console import Console
from rich.table import Table

from coordinator.qr import MAX_IMAGE_BYTES, read_qr_png
from crypto.codes import MAX_PAYLOAD_CHARS, check_payload, decode_payload, unprefix
from crypto.errors import CryptoError
from crypto.pki import (
    RevocationList,
    TrustList,
    load_certificate,
    load_revocations,
    load_trust_list,
    parse_certificate,
)
from runctx.pki import read_fingerprint

FINGERPRINT_FILE = "root.fingerprint"
"""Next to the trust list, the verifier's stored pin (`keys init` writes RUN/pki/root.fingerprint)."""

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2
MAX_TEXT_BYTES = 4 * MAX_PAYLOAD_CHARS + 16
"""The largest payload text file: the longest payload in UTF-8, a byte-order mark and a line end."""


_HCP_LABELS = {"c": "colour", "n": "name", "sid": "id", "id": "code id", "pv": "policy", "vd": "colour until"}


class _Unusable(Exception):
    """Input the verifier cannot work with (exit 2); the message says why."""


def verify(
    code: str | None = typer.Argument(None, help="The payload, 'HCP1:...' or 'HC1:...'.", show_default=False),
    file: Path | None = typer.Option(None, "--file", help="A QR image (PNG) or a text file: the payload."),
    trust: Path | None = typer.Option(None, "--trust", help="Signed trust list (RUN/pki/trustlist.json)."),
    cert: str | None = typer.Option(
        None, "--cert", help="Trust this signer certificate: a PEM/DER file, or base64 DER given inline."
    ),
    root_fingerprint: str | None = typer.Option(
        None, "--root-fingerprint",
        help="Pin the national root: SHA-256 of its certificate's DER, 64 hex digits [default: the "
        "root.fingerprint file next to the trust list].",
    ),
    root: Path | None = typer.Option(None, "--root", help="Pin the root by its certificate file instead."),
    revocations: list[Path] = typer.Option(
        [], "--revocations", help="An issuer's signed revocation list (repeat: one per issuer)."
    ),
    at: str | None = typer.Option(None, "--at", help="Verification time, ISO 8601 (default now, naive=UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Verify a health code offline: signature, issuer, validity period and revocation.

    The trust list must be signed by the pinned national root (--root-fingerprint, else the
    root.fingerprint stored next to it) and, like each revocation list, not older than its max_age at the
    verification time. A code is accepted from every issuer on the list; its iss must be the issuer of its
    signing key. Exit status 0 valid, 1 invalid (bad signature, unknown key or issuer, expired, revoked),
    2 unusable input (including a substituted or stale list).

    A simulated run's codes are dated in its scenario (the demo's on 2020-02-01), so give --at.

    [bold]Examples[/bold] (after `make demo`):

    [cyan]healthpsi verify --file "$(ls runs/demo/coordinator/qr/*.png | head -1)"
    --trust runs/demo/pki/trustlist.json --revocations runs/demo/pki/issuers/411200/revocations.json
    --at 2020-02-01T12:00:00Z[/cyan]

    [cyan]healthpsi verify --file "$(ls runs/demo/coordinator/qr/*.txt | head -1)"
    --trust runs/demo/pki/trustlist.json --at 2020-02-01T12:00:00Z --json[/cyan]
    """
    fmt: str | None = None
    try:
        payload = _payload(code, file)
        try:
            fmt = unprefix(payload)[0]
        except CryptoError:
            fmt = None
        decode_payload(payload)  # an unreadable code is reported as such before any list is looked at
        moment = _time(at)
        trust_list, revocation_lists = _trust(trust, cert, root, root_fingerprint, revocations)
        trust_list.check_fresh(moment)
        for listed in revocation_lists:
            listed.check_fresh(moment)
        report = check_payload(payload, trust_list, moment, revocation_lists)
    except (_Unusable, CryptoError) as exc:
        _print_unusable(str(exc), fmt, as_json)
        raise typer.Exit(EXIT_UNUSABLE) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
    else:
        _print_report(report.to_json())
    raise typer.Exit(EXIT_VALID if report.valid else EXIT_INVALID)


def _payload(code: str | None, file: Path | None) -> str:
    """The payload from the argument or the file (a QR image, or text)."""
    if (code is None) == (file is None):
        raise _Unusable("give exactly one of CODE or --file")
    if code is not None:
        return code.strip("\r\n")
    assert file is not None
    data = _read_bounded(file, max(MAX_IMAGE_BYTES, MAX_TEXT_BYTES))
    try:
        return data.decode("utf-8").lstrip("\ufeff").strip("\r\n")
    except UnicodeDecodeError:
        return read_qr_png(data)  # not text: an image


def _read_bounded(file: Path, limit: int) -> bytes:
    """A regular file's bytes, refused (unusable) when it is not a regular file or holds more than `limit`
    bytes; never reads more than `limit` + 1 bytes, and never waits on a FIFO."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise _Unusable(f"--file {file}: cannot read ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
        raise _Unusable(f"--file {file}: {what}, not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as fh:
        data = fh.read(limit + 1)
    if data is None or len(data) > limit:
        raise _Unusable(
            f"--file {file}: more than {limit} bytes, larger than any health code or QR image can be"
        )
    return data


def _trust(
    trust: Path | None, cert: str | None, root: Path | None, fingerprint: str | None, revocations: list[Path]
) -> tuple[TrustList, list[RevocationList]]:
    """Load the trust list against its pinned root (or the single trusted certificate) and the revocation
    lists, each checked against its issuer's key on the trust list."""
    if (trust is None) == (cert is None):
        raise _Unusable("give exactly one of --trust or --cert")
    if trust is not None:
        pinned = load_certificate(root) if root is not None else None
        trust_list = load_trust_list(trust, pinned, _fingerprint(trust, fingerprint, pinned is not None))
    else:
        assert cert is not None
        if revocations:
            raise _Unusable("--revocations needs --trust: a revocation list is checked against its issuer")
        trust_list = TrustList.from_certificates([_certificate(cert)])
    return trust_list, [load_revocations(path, trust_list) for path in revocations]


def _fingerprint(trust: Path, given: str | None, root_given: bool) -> str | None:
    """The pinned root fingerprint: --root-fingerprint, else the root.fingerprint next to the trust list
    (None when --root pins the certificate itself); a trust list with no pin at all is refused."""
    if given is not None:
        value = given.strip().lower().replace(":", "")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise _Unusable(f"--root-fingerprint {given!r}: expected 64 hex digits (SHA-256 of the root DER)")
        return value
    stored = trust.parent / FINGERPRINT_FILE
    if stored.is_file():
        return read_fingerprint(stored)
    if root_given:
        return None
    raise _Unusable(f"--trust {trust}: no pinned root; give --root-fingerprint HEX "
                    f"(RUN/pki/{FINGERPRINT_FILE}) or --root CERT, never the root the list carries itself")


def _certificate(cert: str) -> x509.Certificate:
    """--cert: a PEM/DER file if one exists at that path, else inline base64 DER."""
    source = Path(cert)
    try:
        data = source.read_bytes() if source.is_file() else None
    except OSError as exc:  # e.g. a base64 value too long to be a file name
        if exc.errno != errno.ENAMETOOLONG:
            raise _Unusable(f"--cert {cert}: cannot read ({exc.strerror or exc})") from None
        data = None
    try:
        return parse_certificate(cert if data is None else data)
    except CryptoError as exc:
        what = f"file {cert}" if data is not None else "value (not a file; not base64 DER either)"
        raise _Unusable(f"--cert {what}: {exc}") from None


def _time(at: str | None) -> datetime:
    """The verification time: --at (naive = UTC) or now."""
    if at is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise _Unusable(f"--at {at!r}: not an ISO 8601 time (e.g. 2020-02-01T08:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _print_unusable(reason: str, fmt: str | None, as_json: bool) -> None:
    """Report input the verifier cannot use."""
    if as_json:
        report: dict[str, Any] = {
            "valid": False, "signature_ok": False, "time_ok": False, "revoked": False,
            "format": fmt, "reason": reason, "claims": None,
        }
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        Console(stderr=True).print(f"[bold red]unusable input:[/bold red] {reason}", highlight=False)


def _print_report(report: dict[str, Any]) -> None:
    """A human-readable verdict with the code's visible claims."""
    console = Console()
    verdict = "[bold green]VALID[/bold green]" if report["valid"] else "[bold red]INVALID[/bold red]"
    table = Table(show_header=False, box=None)
    table.add_row("verdict", verdict)
    table.add_row("format", report["format"])
    table.add_row("reason", report["reason"])
    table.add_row("signature", _mark(report["signature_ok"]))
    table.add_row("validity period", _mark(report["time_ok"]))
    table.add_row("revoked", "yes" if report["revoked"] else "no")
    claims = report["claims"] or {}
    for key in ("iat", "exp"):
        if isinstance(claims.get(key), int | float):
            table.add_row(key, datetime.fromtimestamp(claims[key], UTC).isoformat())
    hcp = claims.get("hcp")
    if isinstance(hcp, dict):
        for key, label in _HCP_LABELS.items():
            if key in hcp:
                table.add_row(label, str(hcp[key]))
    console.print(table)


def _mark(ok: bool) -> str:
    """A check mark or a cross."""
    return "[green]ok[/green]" if ok else "[red]failed[/red]"
