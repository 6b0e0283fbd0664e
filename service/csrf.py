"""CSRF tokens for the service's forms: one per session and party, checked in constant time."""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from service.i18n import negotiate, text
from service.pages import render

FIELD = "csrf"


def csrf_token(request: Request, key: str) -> str:
    """The session's CSRF token under `key`, made on first use; every form of that party carries it."""
    token = request.session.get(key)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session[key] = token
    return token


def csrf_ok(request: Request, key: str, sent: object) -> bool:
    """Whether `sent` (the form's `csrf` field) is the session's token under `key`."""
    expected = request.session.get(key)
    return isinstance(expected, str) and isinstance(sent, str) and hmac.compare_digest(expected, sent)


def renew_csrf(request: Request, key: str) -> None:
    """A fresh token under `key` (after signing in, so a token seen before it is worthless)."""
    request.session[key] = secrets.token_urlsafe(24)


async def checked_form(request: Request, key: str, back: str) -> FormData | Response:
    """The posted form, or a 403 error page (linking back to `back`) when it lacks the session's token under
    `key`."""
    form = await request.form()
    if not csrf_ok(request, key, form.get(FIELD)):
        reason = text("error.csrf", negotiate(request))
        return render(request, "error.html", {"reason": reason, "back": back}, status=403)
    return form
