"""The host app (the police agency's): a landlord or employer signs in with the citizen's phone one-time code,
names a place and declares its tenants or staff (房东/单位反向申报); each person's id number and name are
checked against the police register before anything is written, and the declaration is delivered to the
police agency's data (RUN/data/police/declarations/). JSON APIs under /api/v1/host, pages under /host.

The host is the registered person whose phone signed in; `declared_by` is that person's id number, as the
police agency's own rows carry it. JSON APIs need the session cookie (signed, SameSite=strict) and a JSON
body; forms carry a per-session CSRF token.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from service.citizen.forms import OtpRequest, SessionRequest, first_problem
from service.citizen.otp import OtpError, client_address, otp_box
from service.csrf import checked_form, csrf_token, renew_csrf
from service.host import forms
from service.host.deliveries import Declared, run_date
from service.host.desk import HostDesk, HostError, desk_of
from service.host.register import RegisterError
from service.i18n import negotiate, text
from service.pages import render

router = APIRouter()
SESSION = "host"
"""Session key: {"phone", "host"} of the signed-in host (apart from the citizen's, so one does not sign in
the other)."""
PENDING = "host_pending"
CSRF = "host_csrf"
FORM_ROWS = 5
"""Blank rows the declaration page offers."""
ROW = re.compile(r"^row (\d+):")
ROW_NUMBER = re.compile(r"\brow (\d+)")


def _desk(request: Request) -> HostDesk:
    return desk_of(request.app.state.settings, request.app.state)


def _host(request: Request) -> tuple[str, str] | None:
    """(phone, host id number) of the signed-in host, or None."""
    signed = request.session.get(SESSION)
    if (
        isinstance(signed, dict)
        and isinstance(signed.get("phone"), str)
        and isinstance(signed.get("host"), str)
    ):
        return signed["phone"], signed["host"]
    return None


def _problem(status: int, reason: str, message: str, **extra: Any) -> HTTPException:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if extra.get("retry_after") else None
    extra.pop("retry_after", None)
    return HTTPException(status, {"reason": reason, "message": message, **extra}, headers=headers)


def _required(request: Request) -> tuple[str, str]:
    host = _host(request)
    if host is None:
        raise _problem(401, "NO_SESSION", "sign in first (POST /api/v1/host/session)")
    return host


def _sign_in(request: Request, phone: str, otp: str) -> str:
    """Use up the one-time code, find the registered person the phone belongs to, start a fresh session;
    the host's id number. OtpError or HostError when either fails."""
    otp_box(request).accept(phone, otp)
    host = _desk(request).host_of(phone)
    request.session.pop(PENDING, None)
    request.session.pop(CSRF, None)
    request.session[SESSION] = {"phone": phone, "host": host}
    renew_csrf(request, CSRF)
    return host


def _masked(subject_id: str) -> str:
    return f"{subject_id[:3]}***********{subject_id[-4:]}"


def _declared_json(d: Declared) -> dict[str, str]:
    return {
        "place_id": d.place_id,
        "subject_id": d.subject_id,
        "role": d.role,
        "from_date": d.from_date.isoformat(),
        "to_date": d.to_date.isoformat(),
        "delivered": d.delivered.isoformat(),
    }


def _parse(request: Request, body: object) -> forms.DeclarationRequest:
    """The declaration, or HTTPException 422 naming the row and field at fault."""
    try:
        return forms.parse(body, _today(request))
    except ValidationError as exc:
        message = forms.problem(exc)
        found = ROW.match(message)
        row = int(found.group(1)) if found else None
        raise _problem(422, "INVALID", message, rows=[] if row is None else [row]) from None


def _today(request: Request) -> dt.date:
    return run_date(request.app.state.settings.run)


def _declare(
    request: Request, phone: str, host: str, declaration: forms.DeclarationRequest
) -> dict[str, Any]:
    try:
        delivery = _desk(request).declare(phone, host, declaration)
    except HostError as exc:
        raise _problem(
            exc.status, exc.reason, str(exc), rows=list(exc.rows), retry_after=exc.retry_after
        ) from None
    except RegisterError as exc:
        raise _problem(503, "UNAVAILABLE", str(exc)) from None
    return {
        "status": "declared",
        "place_id": declaration.place_id,
        "people": delivery.people,
        "delivered": delivery.delivered,
        "file": str(delivery.path.relative_to(request.app.state.settings.run)),
    }


# --------------------------------------------------------------------------------------------- APIs


@router.post("/api/v1/host/otp", tags=["host"], status_code=202)
def api_send_otp(request: Request, body: OtpRequest) -> dict[str, str]:
    """Send a one-time code to the host's phone (the citizen's SMS gateway and rate limits)."""
    try:
        otp_box(request).send(body.phone, client_address(request))
    except OtpError as exc:
        raise _problem(exc.status, exc.reason, str(exc), retry_after=exc.retry_after) from None
    return {"status": "sent"}


@router.post("/api/v1/host/session", tags=["host"])
def api_sign_in(request: Request, body: SessionRequest) -> dict[str, str]:
    """Sign in with the phone's one-time code: the host is the registered person with that phone (403 when
    the police register has no one with it)."""
    try:
        host = _sign_in(request, body.phone, body.otp)
    except OtpError as exc:
        raise _problem(exc.status, exc.reason, str(exc), retry_after=exc.retry_after) from None
    except HostError as exc:
        raise _problem(exc.status, exc.reason, str(exc)) from None
    return {"status": "signed-in", "phone": body.phone, "host": _masked(host)}


@router.delete("/api/v1/host/session", tags=["host"])
def api_sign_out(request: Request) -> dict[str, str]:
    """Sign out of the host app."""
    _required(request)
    request.session.pop(SESSION, None)
    return {"status": "signed-out"}


@router.post(
    "/api/v1/host/declarations",
    tags=["host"],
    status_code=201,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": forms.request_schema()}}}
    },
)
async def api_declare(request: Request) -> JSONResponse:
    """Declare tenants (at a `dwelling-…`) or staff (at a `workplace-…`): {place_id, people: [{subject_id,
    name, role, from_date, to_date}]}. Every person is checked against the police register first: 201 with
    the delivery, or 422 naming each row at fault (nothing written), 429 when asked too often."""
    phone, host = _required(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _problem(415, "NOT_JSON", "send the declaration as application/json")
    try:
        body = await request.json()
    except ValueError:
        raise _problem(400, "NOT_JSON", "the body must be a JSON object") from None
    declaration = _parse(request, body)
    return JSONResponse(_declare(request, phone, host, declaration), status_code=201)


@router.get("/api/v1/host/declarations", tags=["host"])
def api_declarations(request: Request) -> list[dict[str, str]]:
    """The declarations you made, newest delivery first."""
    _, host = _required(request)
    return [_declared_json(d) for d in _desk(request).declarations(host)]


# -------------------------------------------------------------------------------------------- pages


def _home(request: Request, status: int = 200, **context: Any) -> Response:
    host = _host(request)
    values: dict[str, Any] = {
        "csrf": csrf_token(request, CSRF),
        "host": None if host is None else {"phone": host[0], "masked": _masked(host[1])},
        "pending": request.session.get(PENDING),
        "declared": _desk(request).declarations(host[1]) if host else [],
        "today": _today(request),
        "rows": FORM_ROWS,
        "form": {},
        "bad_rows": (),
        "declared_now": request.query_params.get("declared", "") if host else "",
    }
    values.update(context)
    return render(request, "host/index.html", values, status=status)


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"reason": message, "back": "/host"}, status=status)


@router.get("/host", include_in_schema=False)
def page_home(request: Request) -> Response:
    """Sign in; then the declaration form and the declarations made."""
    return _home(request)


@router.post("/host/otp", include_in_schema=False)
async def page_send_otp(request: Request) -> Response:
    """The sign-in form's first step: send a one-time code."""
    form = await checked_form(request, CSRF, "/host")
    if isinstance(form, Response):
        return form
    try:
        body = OtpRequest(phone=str(form.get("phone", "")))
        otp_box(request).send(body.phone, client_address(request))
    except ValidationError as exc:
        return _home(request, 422, error=first_problem(exc))
    except OtpError as exc:
        return _home(request, exc.status, error=str(exc))
    request.session[PENDING] = body.phone
    return RedirectResponse("/host", status_code=303)


@router.post("/host/session", include_in_schema=False)
async def page_sign_in(request: Request) -> Response:
    """The sign-in form's second step: the one-time code."""
    form = await checked_form(request, CSRF, "/host")
    if isinstance(form, Response):
        return form
    try:
        body = SessionRequest(phone=str(form.get("phone", "")), otp=str(form.get("otp", "")))
        _sign_in(request, body.phone, body.otp)
    except ValidationError as exc:
        return _home(request, 422, error=first_problem(exc))
    except (OtpError, HostError) as exc:
        return _home(request, exc.status, error=str(exc))
    return RedirectResponse("/host", status_code=303)


@router.post("/host/signout", include_in_schema=False)
async def page_sign_out(request: Request) -> Response:
    """Sign out."""
    form = await checked_form(request, CSRF, "/host")
    if isinstance(form, Response):
        return form
    request.session.pop(SESSION, None)
    return RedirectResponse("/host", status_code=303)


def _form_rows(form: FormData) -> list[dict[str, str]]:
    """The form's person rows as typed (FORM_ROWS of them, each field a list in row order)."""
    fields = ("subject_id", "name", "role", "from_date", "to_date")
    columns = {f: [str(v) for v in form.getlist(f)] for f in fields}
    count = max((len(v) for v in columns.values()), default=0)
    return [{f: (columns[f][i] if i < len(columns[f]) else "") for f in fields} for i in range(count)]


@router.post("/host/declare", include_in_schema=False)
async def page_declare(request: Request) -> Response:
    """The declaration form: rows left blank are ignored; on success the page lists the new rows."""
    form = await checked_form(request, CSRF, "/host")
    if isinstance(form, Response):
        return form
    host = _host(request)
    if host is None:
        return _error(request, 401, text("error.sign_in", negotiate(request)))
    typed = _form_rows(form)
    # a row counts once any of its typed fields is filled in (the role select always has a value)
    position = [
        i
        for i, r in enumerate(typed, 1)
        if any(r[f].strip() for f in ("subject_id", "name", "from_date", "to_date"))
    ]
    kept = {"place_id": str(form.get("place_id", "")), "people": typed}
    if not position:
        return _home(request, 422, error=text("host.no_rows", negotiate(request)), form=kept)
    try:
        declaration = _parse(
            request, {"place_id": kept["place_id"], "people": [typed[i - 1] for i in position]}
        )
        done = _declare(request, *host, declaration)
    except HTTPException as exc:
        detail: Any = exc.detail
        # rows are numbered among the filled ones: name them by the form's own row numbers
        rows = tuple(position[r - 1] for r in detail.get("rows", ()))
        message = ROW_NUMBER.sub(lambda m: f"row {position[int(m.group(1)) - 1]}", detail["message"])
        if detail.get("reason") == "IDENTITY_MISMATCH" and negotiate(request) == "zh":
            listed = "、".join(str(r) for r in rows)
            message = text("host.mismatch", "zh").replace("{rows}", listed) + " " + message
        return _home(request, exc.status_code, error=message, form=kept, bad_rows=rows)
    return RedirectResponse(f"/host?declared={done['people']}", status_code=303)
