"""Server-rendered pages: one Jinja2 environment, every page told its language and the apps that are on."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import Response

from service.i18n import COOKIE, LANGS, negotiate, text

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> Response:
    """The page `template` in the request's language; a `?lang=` choice is remembered in a cookie."""
    lang = negotiate(request)
    values: dict[str, Any] = {
        "lang": lang,
        "other_lang": next(x for x in LANGS if x != lang),
        "t": partial(text, lang=lang),
        "apps": request.app.state.settings.apps,
    }
    values.update(context or {})
    response = TEMPLATES.TemplateResponse(request, template, values, status_code=status)
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(COOKIE, lang, max_age=365 * 86400, samesite="strict", httponly=True)
    return response
