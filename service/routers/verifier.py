"""The checkpoint verifier (verifier party): the offline page and its service worker, the pinned root
fingerprint and list addresses, the signed trust list and every issuing authority's revocation list, and
anonymous scan counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from crypto.errors import TrustListError
from crypto.pki import region_code
from runctx.pki import PkiPaths, read_fingerprint
from service import counts
from service.i18n import negotiate, text
from service.pages import render

router = APIRouter()
DIST = Path(__file__).resolve().parent.parent / "static" / "dist"
TRUSTLIST_URL = "/api/v1/verifier/trustlist"
REVOCATIONS_URL = "/api/v1/verifier/revocations"
SCANS_URL = "/api/v1/verifier/scans"
PAGE_TEXTS = (
    "lists.ok",
    "lists.failed",
    "lists.trust",
    "lists.revocations",
    "offline.ready",
    "offline.failed",
    "verdict.green",
    "verdict.yellow",
    "verdict.red",
    "verdict.invalid",
    "result.expires",
    "reason.not-a-code",
    "reason.unknown-key",
    "reason.wrong-issuer",
    "reason.bad-signature",
    "reason.expired",
    "reason.not-yet-valid",
    "reason.revoked",
    "reason.no-lists",
    "reason.no-camera",
    "reason.no-qr",
)


def _pki(request: Request) -> PkiPaths:
    return PkiPaths(request.app.state.settings.run)


def _no_cache(response: Response) -> Response:
    response.headers["cache-control"] = "no-cache"
    return response


@router.get("/verifier", include_in_schema=False)
def page(request: Request) -> Response:
    """The verifier page; once loaded, its service worker keeps it working offline."""
    lang = negotiate(request)
    texts = json.dumps({k: text(k, lang) for k in PAGE_TEXTS}, ensure_ascii=False)
    return _no_cache(render(request, "verifier.html", {"texts": texts}))


@router.get("/verifier-sw.js", include_in_schema=False)
def service_worker() -> Response:
    """The verifier's service worker (scope /verifier), from the committed bundle."""
    return _no_cache(FileResponse(DIST / "sw.js", media_type="text/javascript"))


@router.get("/api/v1/verifier/config", tags=["verifier"])
def config(request: Request) -> dict[str, object]:
    """The pinned root fingerprint (SHA-256 of the root certificate's DER, hex, RUN/pki/root.fingerprint) and
    the lists' addresses: the trust list and one revocation list per issuing authority."""
    paths = _pki(request)
    try:
        fingerprint = read_fingerprint(paths.root_fingerprint)
    except TrustListError as exc:
        raise HTTPException(503, f"no pinned root in this run: {exc}") from None
    return {
        "root_fingerprint": fingerprint,
        "trustlist_url": TRUSTLIST_URL,
        "revocations_urls": [f"{REVOCATIONS_URL}/{region}" for region in paths.issuers()],
        "scans_url": SCANS_URL,
    }


def _signed_list(path: Path, what: str) -> Response:
    try:
        body = path.read_bytes()
    except OSError:
        raise HTTPException(
            503, f"no {what} in this run ({path.name}); create it with healthpsi keys init"
        ) from None
    return _no_cache(Response(body, media_type="application/json"))


@router.get(TRUSTLIST_URL, tags=["verifier"])
def trustlist(request: Request) -> Response:
    """The trust list, as the national root signed it (RUN/pki/trustlist.json)."""
    return _signed_list(_pki(request).trustlist, "trust list")


@router.get(REVOCATIONS_URL, tags=["verifier"])
def revocations(request: Request) -> Response:
    """The home issuer's revocation list, as it signed it (RUN/pki/issuers/<region>/revocations.json)."""
    return _signed_list(_pki(request).revocations, "revocation list")


@router.get(REVOCATIONS_URL + "/{issuer}", tags=["verifier"])
def issuer_revocations(request: Request, issuer: str) -> Response:
    """One issuing authority's revocation list (its GB/T 2260 region code), as it signed it."""
    try:
        directory = _pki(request).issuer_dir(region_code(issuer))
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from None
    return _signed_list(directory / "revocations.json", f"revocation list of issuer {issuer}")


class Scan(BaseModel):
    """One scan's outcome at a checkpoint: nothing about the code or its holder."""

    checkpoint: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w\- ]+$")]
    result: Literal["green", "yellow", "red", "invalid"]


@router.post(SCANS_URL, tags=["verifier"], status_code=204)
def scan(request: Request, body: Scan) -> Response:
    """Count one scan per checkpoint, day and result (RUN/service/counts.sqlite)."""
    counts.add_scan(request.app.state.settings.state_dir, body.checkpoint.strip(), body.result)
    return Response(status_code=204)
