"""What a checkpoint's offline verifier is configured with: the pinned national root, the trust list of every
issuing authority and each authority's revocation list (`runctx.pki.verifier_config`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.requests import Request

from crypto.errors import TrustListError
from runctx.pki import PkiPaths, verifier_config

router = APIRouter()


@router.get("/api/v1/verifier/config", tags=["verifier"])
def config(request: Request) -> dict[str, Any]:
    """The verifier's configuration: `root_fingerprint` (SHA-256 hex of the national root's DER, to pin),
    `trustlist` and `revocations` (the signed documents as published; see the README's health-code format)."""
    try:
        return verifier_config(PkiPaths(request.app.state.settings.run))
    except TrustListError as exc:
        raise HTTPException(503, f"the run's PKI is not usable: {exc}") from None
