"""The citizen app: sign in with a phone one-time code, apply for oneself or family (identity checked by the
police node over PSI), show a code, appeal — as JSON APIs under /api/v1/citizen and as pages under /citizen.

JSON APIs need the session cookie (signed, expiring, SameSite=strict) and a JSON body (a cross-site form
cannot send one); forms carry a per-session CSRF token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from service.citizen.desk import CitizenDesk, CodeView, Outcome, desk_of
from service.citizen.forms import (
    SYMPTOMS,
    AppealRequest,
    ApplicationRequest,
    OtpRequest,
    SessionRequest,
    first_problem,
)
from service.citizen.issuing import Unavailable
from service.citizen.otp import OtpBox, OtpError, client_address, otp_box
from service.csrf import checked_form, csrf_token, renew_csrf
from service.i18n import negotiate, text
from service.pages import render

router = APIRouter()
Step = TypeVar("Step", OtpRequest, SessionRequest)
SESSION_PHONE = "citizen"
PENDING_PHONE = "citizen_pending"
CSRF = "csrf"


# ------------------------------------------------------------------------------------------- helpers


def _desk(request: Request) -> CitizenDesk:
    return desk_of(request.app.state.settings, request.app.state)


def _sign_in(request: Request, phone: str) -> None:
    """A fresh session for the phone (nothing of the anonymous one carried over, a new CSRF token)."""
    request.session.clear()
    request.session[SESSION_PHONE] = phone
    renew_csrf(request, CSRF)


def _phone(request: Request) -> str:
    """The signed-in citizen's phone (401 without a session)."""
    phone = request.session.get(SESSION_PHONE)
    if not isinstance(phone, str):
        raise _problem(401, "NO_SESSION", "sign in first (POST /api/v1/citizen/session)")
    return phone


def _problem(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, {"reason": reason, "message": message}, headers=headers)


def _otp_problem(exc: OtpError) -> HTTPException:
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return _problem(exc.status, exc.reason, str(exc), headers)


def _outcome_json(outcome: Outcome) -> JSONResponse:
    if outcome.code is None:
        return JSONResponse(
            {
                "application_id": outcome.application_id,
                "status": "refused",
                "reason": outcome.refusal,
                "message": text(f"refusal.{outcome.refusal}", "en"),
            },
            status_code=422,
        )
    code = outcome.code
    return JSONResponse(
        {
            "application_id": outcome.application_id,
            "status": "issued",
            "code_id": code.code_id,
            "color": code.color,
            "reasons": list(code.reasons),
            "expires_at": code.expires_at,
        },
        status_code=201,
    )


async def _apply(request: Request, phone: str, body: ApplicationRequest) -> Outcome:
    if body.relation == "self" and body.phone != phone:
        raise _problem(422, "INVALID", "phone: for yourself, give the phone you signed in with")
    try:
        return await _desk(request).apply(phone, body)
    except Unavailable as exc:
        raise _problem(503, "UNAVAILABLE", str(exc), {"Retry-After": "30"}) from None


# --------------------------------------------------------------------------------------------- APIs


@router.post("/api/v1/citizen/otp", tags=["citizen"], status_code=202)
def api_send_otp(request: Request, body: OtpRequest) -> dict[str, str]:
    """Send a one-time code to the phone (SMS outbox); rate-limited per phone and per client address."""
    try:
        otp_box(request).send(body.phone, client_address(request))
    except OtpError as exc:
        raise _otp_problem(exc) from None
    return {"status": "sent"}


@router.post("/api/v1/citizen/session", tags=["citizen"])
def api_sign_in(request: Request, body: SessionRequest) -> dict[str, str]:
    """Sign in with the phone's one-time code (single use, valid 5 minutes): a signed session cookie."""
    try:
        otp_box(request).accept(body.phone, body.otp)
    except OtpError as exc:
        raise _otp_problem(exc) from None
    _sign_in(request, body.phone)
    return {"status": "signed-in", "phone": body.phone}


@router.delete("/api/v1/citizen/session", tags=["citizen"])
def api_sign_out(request: Request) -> dict[str, str]:
    """Sign out (the session cookie is cleared)."""
    _phone(request)
    request.session.clear()
    return {"status": "signed-out"}


@router.post("/api/v1/citizen/applications", tags=["citizen"], status_code=201)
async def api_apply(request: Request, body: ApplicationRequest) -> JSONResponse:
    """Apply for a code for yourself or a family member: the identity is checked by the police node over
    PSI; 201 with the code, or 422 with the refusal reason."""
    return _outcome_json(await _apply(request, _phone(request), body))


@router.get("/api/v1/citizen/codes", tags=["citizen"])
def api_codes(request: Request) -> list[dict[str, Any]]:
    """Your applications, newest first, with their codes' colours."""
    phone = _phone(request)
    return [
        {
            "application_id": a.application_id,
            "relation": a.relation,
            "created_at": a.created_at,
            "status": a.status,
            "reason": a.reason,
            "code_id": a.code_id,
            "color": None if code is None else code.color,
            "expires_at": None if code is None else code.expires_at,
        }
        for a, code in _desk(request).applications(phone)
    ]


@router.get("/api/v1/citizen/codes/{code_id}", tags=["citizen"])
async def api_code(request: Request, code_id: str) -> dict[str, Any]:
    """One of your codes: colour, reasons, masked name and id, validity, payload (404 if not yours)."""
    # the hot path of a morning peak: an indexed read on the event loop's own connection costs less than
    # the hop to a worker thread
    view = _desk(request).view(_phone(request), code_id)
    if view is None:
        raise _problem(404, "NOT_FOUND", "no such code among yours")
    return view.to_json()


class AppealOut(BaseModel):
    """A stored appeal."""

    appeal_id: str
    code_id: str
    reason: str
    created_at: str
    status: str


@router.post("/api/v1/citizen/codes/{code_id}/appeals", tags=["citizen"], status_code=201)
def api_appeal(request: Request, code_id: str, body: AppealRequest) -> AppealOut:
    """Appeal against one of your codes' colour, with a reason (404 if the code is not yours)."""
    appeal = _desk(request).appeal(_phone(request), code_id, body.reason)
    if appeal is None:
        raise _problem(404, "NOT_FOUND", "no such code among yours")
    return AppealOut(**{k: getattr(appeal, k) for k in AppealOut.model_fields})


@router.get("/api/v1/citizen/codes/{code_id}/appeals", tags=["citizen"])
def api_appeals(request: Request, code_id: str) -> list[AppealOut]:
    """The appeals against one of your codes (404 if the code is not yours)."""
    appeals = _desk(request).appeals(_phone(request), code_id)
    if appeals is None:
        raise _problem(404, "NOT_FOUND", "no such code among yours")
    return [AppealOut(**{k: getattr(a, k) for k in AppealOut.model_fields}) for a in appeals]


# -------------------------------------------------------------------------------------------- pages


def _home(request: Request, status: int = 200, **context: Any) -> Response:
    phone = request.session.get(SESSION_PHONE)
    values: dict[str, Any] = {
        "csrf": csrf_token(request, CSRF),
        "phone": phone,
        "pending": request.session.get(PENDING_PHONE),
        "symptoms": SYMPTOMS,
        "applications": _desk(request).applications(phone) if isinstance(phone, str) else [],
        "form": {},
    }
    values.update(context)
    return render(request, "citizen/index.html", values, status=status)


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"reason": message, "back": "/citizen"}, status=status)


@router.get("/citizen", include_in_schema=False)
def page_home(request: Request) -> Response:
    """Sign in, apply for yourself or family, and the list of your codes."""
    return _home(request)


async def _otp_form(
    request: Request, model: type[Step], fields: tuple[str, ...], act: Callable[[OtpBox, Step], None]
) -> Step | Response:
    """A sign-in step's form: its CSRF token checked, its fields validated into `model`, then `act` on the
    one-time codes; the home page with the problem (422, or the one-time code's refusal) when one fails."""
    form = await checked_form(request, CSRF, "/citizen")
    if isinstance(form, Response):
        return form
    try:
        body = model.model_validate({k: str(form.get(k, "")) for k in fields})
        act(otp_box(request), body)
    except ValidationError as exc:
        return _home(request, 422, error=first_problem(exc))
    except OtpError as exc:
        return _home(request, exc.status, error=str(exc))
    return body


@router.post("/citizen/otp", include_in_schema=False)
async def page_send_otp(request: Request) -> Response:
    """The sign-in form's first step: send a one-time code."""
    address = client_address(request)
    body = await _otp_form(request, OtpRequest, ("phone",), lambda box, b: box.send(b.phone, address))
    if isinstance(body, Response):
        return body
    request.session[PENDING_PHONE] = body.phone
    return RedirectResponse("/citizen", status_code=303)


@router.post("/citizen/session", include_in_schema=False)
async def page_sign_in(request: Request) -> Response:
    """The sign-in form's second step: the one-time code."""
    fields = ("phone", "otp")
    body = await _otp_form(request, SessionRequest, fields, lambda box, b: box.accept(b.phone, b.otp))
    if isinstance(body, Response):
        return body
    _sign_in(request, body.phone)
    return RedirectResponse("/citizen", status_code=303)


@router.post("/citizen/signout", include_in_schema=False)
async def page_sign_out(request: Request) -> Response:
    """Sign out."""
    form = await checked_form(request, CSRF, "/citizen")
    if isinstance(form, Response):
        return form
    request.session.clear()
    return RedirectResponse("/citizen", status_code=303)


@router.post("/citizen/apply", include_in_schema=False)
async def page_apply(request: Request) -> Response:
    """The application form: on success, the new code's page."""
    form = await checked_form(request, CSRF, "/citizen")
    if isinstance(form, Response):
        return form
    phone = request.session.get(SESSION_PHONE)
    if not isinstance(phone, str):
        return _error(request, 401, text("error.sign_in", negotiate(request)))
    fields = {k: str(form.get(k, "")) for k in ("relation", "name", "subject_id", "birth_date", "phone")}
    try:
        symptoms = [str(s) for s in form.getlist("symptoms")]
        body = ApplicationRequest.model_validate({**fields, "symptoms": symptoms})
        outcome = await _apply(request, phone, body)
    except ValidationError as exc:
        return _home(request, 422, error=first_problem(exc), form=fields)
    except HTTPException as exc:
        detail: Any = exc.detail
        message = detail["message"] if isinstance(detail, dict) else str(detail)
        return _home(request, exc.status_code, error=message, form=fields)
    if outcome.code is None:
        lang = negotiate(request)
        return _home(request, 422, refusal=text(f"refusal.{outcome.refusal}", lang), form=fields)
    return RedirectResponse(f"/citizen/codes/{outcome.code.code_id}", status_code=303)


@router.get("/citizen/codes/{code_id}", include_in_schema=False)
async def page_code(request: Request, code_id: str) -> Response:
    """A code to show: QR framed in its colour, masked name and id, validity, live clock, reasons, appeal."""
    phone = request.session.get(SESSION_PHONE)
    lang = negotiate(request)
    if not isinstance(phone, str):
        return _error(request, 401, text("error.sign_in", lang))
    view = _desk(request).view(phone, code_id)
    if view is None:
        return _error(request, 404, text("error.not_found", lang))
    return _code_page(request, phone, view)


def _code_page(request: Request, phone: str, view: CodeView, status: int = 200, **context: Any) -> Response:
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "csrf": csrf_token(request, CSRF),
        "code": view,
        "now": now,
        "appeals": _desk(request).appeals(phone, view.row.code_id) or [],
        "appealed": request.query_params.get("appealed") == "1",
    }
    values.update(context)
    return render(request, "citizen/code.html", values, status=status)


@router.post("/citizen/codes/{code_id}/appeal", include_in_schema=False)
async def page_appeal(request: Request, code_id: str) -> Response:
    """The appeal form on a code's page."""
    form = await checked_form(request, CSRF, "/citizen")
    if isinstance(form, Response):
        return form
    phone = request.session.get(SESSION_PHONE)
    lang = negotiate(request)
    if not isinstance(phone, str):
        return _error(request, 401, text("error.sign_in", lang))
    desk = _desk(request)
    view = desk.view(phone, code_id)
    if view is None:
        return _error(request, 404, text("error.not_found", lang))
    try:
        body = AppealRequest(reason=str(form.get("reason", "")))
    except ValidationError as exc:
        return _code_page(request, phone, view, 422, error=first_problem(exc))
    desk.appeal(phone, code_id, body.reason)
    return RedirectResponse(f"/citizen/codes/{code_id}?appealed=1", status_code=303)
