"""The venue app (venue agency, 一小区一码): an operator registers a venue and prints its signed venue QR; a
visitor signed in on the citizen page scans it to check in (the check-in goes to the venue agency's journal
and data files, never to the coordinator's) and shows their own code at the gate; the gate page counts.

JSON APIs under /api/v1/venues and pages under /venue. Writes go only to RUN/venues/ and RUN/data/venues/;
the citizen's codes are read, never written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proto.regions import COUNTIES, region_name
from proto.tokens import VENUE_KINDS
from service.citizen.desk import CitizenDesk, CodeView, desk_of, qr_svg
from service.citizen.forms import first_problem
from service.csrf import checked_form, csrf_token
from service.i18n import negotiate, text
from service.pages import render
from service.routers.citizen import CSRF as CITIZEN_CSRF
from service.routers.citizen import SESSION_PHONE
from service.venue.book import GateCounts, Registered, VenueBook, local_now
from service.venue.forms import CheckinRequest, VenueRequest
from service.venue.keys import Venue, VenueKey, VenueKeyError, VenueQrError, venue_key
from service.venue.places import PlaceError, locate

router = APIRouter()
log = logging.getLogger("healthpsi.service.venue")
CSRF = "venue_csrf"
SESSION_VENUES = "venues"
"""Session key: the venues this browser registered, venue id → gate key (the operator's own links)."""
MAX_OWNED = 20
"""The most venues a browser's session remembers (the API returns every gate key once anyway)."""
DELIVERY_SECONDS = 60.0
"""How often a worker delivers the journal's new check-ins to the agency's data files."""
GATE_REFRESH_SECONDS = 15


# ------------------------------------------------------------------------------------------- helpers


def book_of(app: FastAPI) -> VenueBook:
    """The worker's venue book, opened on first use."""
    book = getattr(app.state, "venue_book", None)
    if book is None:
        book = VenueBook(app.state.settings.run)
        app.state.venue_book = book
    return book


def _book(request: Request) -> VenueBook:
    return book_of(request.app)


def _key(request: Request) -> VenueKey:
    key = getattr(request.app.state, "venue_key", None)
    if key is None:
        try:
            key = venue_key(request.app.state.settings.run)
        except VenueKeyError as exc:
            raise _problem(503, "NO_KEY", str(exc)) from None
        request.app.state.venue_key = key
    return key


def _desk(request: Request) -> CitizenDesk:
    return desk_of(request.app.state.settings, request.app.state)


def _problem(status: int, reason: str, message: str) -> HTTPException:
    return HTTPException(status, {"reason": reason, "message": message})


def _register(request: Request, body: VenueRequest) -> Registered:
    """Place and register a venue (422 naming the problem with its place)."""
    try:
        cell = locate(request.app.state.settings.run, body.region_code, body.cell_id, body.x_km, body.y_km)
    except PlaceError as exc:
        raise _problem(422, "INVALID", str(exc)) from None
    _key(request)  # no venue without a key to sign its QR
    registered = _book(request).register(body.name, body.kind, body.region_code, cell, body.address)
    owned = dict(request.session.get(SESSION_VENUES) or {})
    owned[registered.venue.venue_id] = registered.gate_key
    request.session[SESSION_VENUES] = dict(list(owned.items())[-MAX_OWNED:])  # the cookie stays small
    return registered


def _venue_json(request: Request, venue: Venue, cell_id: int, address: str) -> dict[str, Any]:
    return {
        "venue_id": venue.venue_id,
        "name": venue.name,
        "kind": venue.kind,
        "region_code": venue.region_code,
        "cell_id": cell_id,
        "address": address,
        "qr_payload": _key(request).sign(venue, dt.datetime.now(dt.UTC)),
        "print_url": f"/venue/{venue.venue_id}/print",
    }


def _gate_json(counts: GateCounts) -> dict[str, Any]:
    return {
        "venue_id": counts.venue.venue_id,
        "name": counts.venue.name,
        "day": counts.now.date().isoformat(),
        "now": counts.now.isoformat(timespec="minutes"),
        "today": counts.today,
        "last_hour": counts.last_hour,
    }


@dataclass(frozen=True)
class CheckedIn:
    """A check-in just journaled: the venue, when, and the code the visitor shows at the gate."""

    venue: Venue
    at: dt.datetime
    code: CodeView


def _check_in(request: Request, phone: str, body: CheckinRequest) -> CheckedIn:
    """Verify the venue QR, find whose code it is among the phone's, journal the check-in."""
    try:
        named = _key(request).read(body.venue_qr)
    except VenueQrError as exc:
        raise _problem(422, exc.reason, str(exc)) from None
    found = _book(request).venue(named.venue_id)
    if found is None:
        raise _problem(422, "unknown-venue", f"venue {named.venue_id} is not registered here")
    venue = found[0]
    desk = _desk(request)
    view = desk.view(phone, body.code_id)
    subject = next((a.subject_id for a, _ in desk.applications(phone) if a.code_id == body.code_id), None)
    if view is None or subject is None:
        raise _problem(404, "NOT_FOUND", "no such code among yours")
    at = local_now(request.app.state.settings.run)
    _book(request).check_in(subject, venue.venue_id, at)
    return CheckedIn(venue, at, view)


# --------------------------------------------------------------------------------------------- APIs


@router.post("/api/v1/venues", tags=["venue"], status_code=201)
def api_register(request: Request, body: VenueRequest) -> dict[str, Any]:
    """Register a venue (its place as a cell of its county, or a position placed on the county's nearest
    cell): 201 with its id, its signed venue QR payload and, once, the secret address of its gate page."""
    registered = _register(request, body)
    out = _venue_json(request, registered.venue, registered.cell_id, registered.address)
    return {**out, "gate_url": f"/venue/gate/{registered.gate_key}", "gate_key": registered.gate_key}


@router.get("/api/v1/venues/{venue_id}", tags=["venue"])
def api_venue(request: Request, venue_id: str) -> dict[str, Any]:
    """A registered venue and its signed QR payload (public: the code hangs at its gate)."""
    found = _book(request).venue(venue_id)
    if found is None:
        raise _problem(404, "NOT_FOUND", f"no venue {venue_id} registered")
    return _venue_json(request, *found)


@router.post("/api/v1/venues/checkins", tags=["venue"], status_code=201)
def api_check_in(request: Request, body: CheckinRequest) -> dict[str, Any]:
    """Check in at a venue with its scanned QR, for yourself or a family member (one of your codes; needs
    the citizen session): 201 with the venue, the time and your code's colour; 422 with the reason when the
    venue QR is refused (not a venue code, forged, altered, unknown venue)."""
    phone = request.session.get(SESSION_PHONE)
    if not isinstance(phone, str):
        raise _problem(401, "NO_SESSION", "sign in first (POST /api/v1/citizen/session)")
    done = _check_in(request, phone, body)
    return {
        "venue_id": done.venue.venue_id,
        "venue_name": done.venue.name,
        "at": done.at.isoformat(timespec="minutes"),
        "code_id": done.code.row.code_id,
        "color": done.code.row.color,
    }


@router.get("/api/v1/venues/gate/{gate_key}", tags=["venue"])
def api_gate(request: Request, gate_key: str) -> dict[str, Any]:
    """A venue's check-ins today and in the last hour, on the run's clock (the gate key is the secret
    registration returned)."""
    counts = _book(request).gate(gate_key)
    if counts is None:
        raise _problem(404, "NOT_FOUND", "no venue has this gate key")
    return _gate_json(counts)


# -------------------------------------------------------------------------------------------- pages


def _error(request: Request, status: int, message: str, back: str = "/venue") -> Response:
    return render(request, "error.html", {"reason": message, "back": back}, status=status)


def _home(request: Request, status: int = 200, **context: Any) -> Response:
    lang = negotiate(request)
    owned = request.session.get(SESSION_VENUES) or {}
    book = _book(request)
    values: dict[str, Any] = {
        "csrf": csrf_token(request, CSRF),
        "kinds": VENUE_KINDS,
        "counties": [(code, region_name(code, lang)) for code in COUNTIES],
        "mine": [found[0] for v in owned if (found := book.venue(v)) is not None],
        "form": {},
    }
    values.update(context)
    return render(request, "venue/index.html", values, status=status)


@router.get("/venue", include_in_schema=False)
def page_home(request: Request) -> Response:
    """Register a venue; the venues this browser registered, with their print and gate pages."""
    return _home(request)


@router.post("/venue/register", include_in_schema=False)
async def page_register(request: Request) -> Response:
    """The registration form: on success, the venue's print page."""
    form = await checked_form(request, CSRF, "/venue")
    if isinstance(form, Response):
        return form
    fields = {
        k: str(form.get(k, "")).strip()
        for k in ("name", "kind", "region_code", "cell_id", "x_km", "y_km", "address")
    }
    values: dict[str, Any] = {k: v for k, v in fields.items() if v != ""}
    try:
        body = VenueRequest.model_validate(values)
        registered = _register(request, body)
    except ValidationError as exc:
        return _home(request, 422, error=first_problem(exc), form=fields)
    except HTTPException as exc:
        detail: Any = exc.detail
        return _home(request, exc.status_code, error=detail["message"], form=fields)
    return RedirectResponse(f"/venue/{registered.venue.venue_id}/print", status_code=303)


@router.get("/venue/{venue_id}/print", include_in_schema=False)
def page_print(request: Request, venue_id: str) -> Response:
    """The printable venue code: the signed QR, the venue's name, kind, county and address."""
    found = _book(request).venue(venue_id)
    if found is None:
        return _error(request, 404, text("venue.not_found", negotiate(request)))
    venue, cell_id, address = found
    payload = _key(request).sign(venue, dt.datetime.now(dt.UTC))
    gate_key = (request.session.get(SESSION_VENUES) or {}).get(venue_id)
    values = {
        "venue": venue,
        "cell_id": cell_id,
        "address": address,
        "county": region_name(venue.region_code, negotiate(request)),
        "payload": payload,
        "qr": qr_svg(payload),
        "gate_url": None if gate_key is None else f"/venue/gate/{gate_key}",
    }
    return render(request, "venue/print.html", values)


@router.get("/venue/gate/{gate_key}", include_in_schema=False)
def page_gate(request: Request, gate_key: str) -> Response:
    """The gate page: today's check-ins and the last hour's, refreshing itself."""
    counts = _book(request).gate(gate_key)
    if counts is None:
        return _error(request, 404, text("venue.no_gate", negotiate(request)))
    values = {"counts": counts, "refresh": GATE_REFRESH_SECONDS, "hour": dt.timedelta(hours=1)}
    response = render(request, "venue/gate.html", values)
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/venue/checkin", include_in_schema=False)
async def page_check_in(request: Request) -> Response:
    """The check-in form of the citizen page (the scanned QR and which code): the visitor's code, full
    screen, with the venue's name and the time, for the gatekeeper."""
    form = await checked_form(request, CITIZEN_CSRF, "/citizen")
    if isinstance(form, Response):
        return form
    lang = negotiate(request)
    phone = request.session.get(SESSION_PHONE)
    if not isinstance(phone, str):
        return _error(request, 401, text("error.sign_in", lang), "/citizen")
    try:
        body = CheckinRequest(venue_qr=str(form.get("venue_qr", "")), code_id=str(form.get("code_id", "")))
        done = _check_in(request, phone, body)
    except ValidationError as exc:
        return _error(request, 422, first_problem(exc), "/citizen")
    except HTTPException as exc:
        detail: Any = exc.detail
        message = f"{text('venue.refused.' + detail['reason'], lang)}: {detail['message']}"
        return _error(request, exc.status_code, message, "/citizen")
    now = dt.datetime.now(dt.UTC)
    return render(request, "citizen/checkin.html", {"done": done, "code": done.code, "now": now}, status=201)


# ---------------------------------------------------------------------------------------------- delivery


def _deliver(app: FastAPI) -> None:
    """One delivery; a failure is logged and retried at the next one (the journal keeps every check-in)."""
    try:
        book_of(app).deliver()
    except (OSError, RuntimeError, sqlite3.Error):
        log.exception("venue check-in delivery failed")


async def deliver_periodically(app: FastAPI) -> None:
    """Deliver the journal's new check-ins every DELIVERY_SECONDS (on a worker thread), until cancelled."""
    while True:
        await asyncio.sleep(DELIVERY_SECONDS)
        await asyncio.to_thread(_deliver, app)


def start_deliveries(app: FastAPI) -> asyncio.Task[None]:
    """At a worker's start: deliver what a crash may have left, publish registered venues to
    venues.parquet, then keep delivering."""
    _deliver(app)
    book_of(app).publish_venues()
    return asyncio.get_running_loop().create_task(deliver_periodically(app))


async def stop_deliveries(app: FastAPI, task: asyncio.Task[None]) -> None:
    """At a worker's shutdown: stop the loop and deliver what is left."""
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    _deliver(app)
    book_of(app).close()
