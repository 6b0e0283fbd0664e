"""The private co-travel check (citizen party): the page, the signed manifests with their trust chain, and
the VOPRF evaluation of a citizen's blinded tokens — a few per session per day, counted, never logged."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from coordinator.cotravel import CotravelError, CotravelPaths, b64, check_request, evaluate, unb64
from crypto import group
from runctx.pki import PkiPaths
from service import counts
from service.pages import render

router = APIRouter()
DAILY_CAP = 5
"""Co-travel checks one session may make per day."""
MAX_DAYS = 31


@router.get("/cotravel", include_in_schema=False)
def page(request: Request) -> Response:
    """The co-travel check page; the check itself runs in the browser (citizen.js)."""
    return render(request, "cotravel.html")


def _read_json(path: Any, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise HTTPException(503, f"no {what} in this run ({path.name})") from None


@router.get("/api/v1/cotravel/manifest", tags=["cotravel"])
def manifest(request: Request) -> dict[str, Any]:
    """Every published day's signed manifest (public key and tags), with the root-signed trust list and
    identities that let a client check the coordinator's signature against the pinned root."""
    run = request.app.state.settings.run
    paths = CotravelPaths(run)
    files = paths.manifests()
    if not files:
        raise HTTPException(
            503, "no co-travel manifest is published; run: healthpsi cotravel publish --run RUN"
        )
    pki = PkiPaths(run)
    return {
        "trustlist": _read_json(pki.trustlist, "trust list"),
        "identities": _read_json(pki.identities, "identities"),
        "manifests": [_read_json(f, "co-travel manifest") for f in files],
    }


class Blinded(BaseModel):
    """Blinded elements (base64, 32 bytes each), ELEMENTS_PER_DAY for every published day."""

    blinded: Annotated[dict[str, list[str]], Field(max_length=MAX_DAYS)]


def _charge(request: Request) -> None:
    """Count this check against the session's daily cap; 429 beyond it."""
    day = counts.today()
    used = request.session.get("cotravel")
    n = used["n"] if isinstance(used, dict) and used.get("day") == day else 0
    if n >= DAILY_CAP:
        raise HTTPException(
            429, f"at most {DAILY_CAP} co-travel checks per session per day; try again tomorrow"
        )
    request.session["cotravel"] = {"day": day, "n": n + 1}


@router.post("/api/v1/cotravel/evaluate", tags=["cotravel"])
def evaluate_blinded(request: Request, body: Blinded) -> dict[str, Any]:
    """Evaluate the blinded elements under each day's key, with one DLEQ proof per day."""
    paths = CotravelPaths(request.app.state.settings.run)
    try:
        blinded = {
            day: [
                unb64(e, f"{day[:10]}: blinded element {i}", group.ELEMENT_BYTES) for i, e in enumerate(items)
            ]
            for day, items in body.blinded.items()
        }
        check_request(paths, blinded)
    except CotravelError as exc:
        raise HTTPException(422, str(exc)) from None
    _charge(request)
    result = evaluate(paths, blinded)
    counts.add_cotravel_check(request.app.state.settings.state_dir)
    return {
        "evaluations": {
            day: {"evaluated": [b64(e) for e in ev.evaluated], "proof": b64(ev.proof)}
            for day, ev in result.items()
        }
    }
