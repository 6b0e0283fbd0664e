"""The commander's dashboard and its JSON APIs (operator login required), read only but for operator
sessions and appeal decisions."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proto.regions import OTHER, region_name
from service.commander import charts, data
from service.commander.accounts import OperatorStore, TooManyFailures
from service.csrf import FIELD, csrf_ok, csrf_token, renew_csrf
from service.i18n import negotiate, text
from service.pages import render

router = APIRouter()
api = APIRouter(prefix="/api/v1/commander", tags=["commander"])

TOKEN_KEY = "commander_token"
CSRF_KEY = "commander_csrf"
REFRESH_SECONDS = 60
LOGIN = "/commander/login"


@functools.cache
def _store(state_dir: Path) -> OperatorStore:
    return OperatorStore(state_dir)


def operators(request: Request) -> OperatorStore:
    """The run's operator accounts and sessions."""
    return _store(request.app.state.settings.state_dir)


def _run(request: Request) -> Path:
    return Path(request.app.state.settings.run)


def logged_in(request: Request) -> str | None:
    """The operator this request's session belongs to, or None."""
    token = request.session.get(TOKEN_KEY)
    return operators(request).session_user(token) if isinstance(token, str) else None


def require_operator(request: Request) -> str:
    """The logged-in operator, or 401 (every commander API depends on it)."""
    user = logged_in(request)
    if user is None:
        raise HTTPException(status_code=401, detail="log in as an operator first (POST /commander/login)")
    return user


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    context = {"csrf": csrf_token(request, CSRF_KEY), "error": error}
    return render(request, "commander_login.html", context, status)


@router.get("/commander/login", include_in_schema=False)
def login_form(request: Request) -> Response:
    """The operator login page."""
    if logged_in(request) is not None:
        return RedirectResponse("/commander", status_code=303)
    return _login_page(request)


@router.post("/commander/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the operator's name and password (CSRF-checked, failures rate-limited); a session on success."""
    form = await request.form()
    lang = negotiate(request)
    if not csrf_ok(request, CSRF_KEY, form.get(FIELD)):
        return _login_page(request, text("cmd.csrf", lang), 403)
    user, password = form.get("username"), form.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        return _login_page(request, text("cmd.login_missing", lang), 400)
    address = request.client.host if request.client else ""
    settings = request.app.state.settings
    try:
        token = operators(request).login(user, password, address, settings.session_max_age)
    except TooManyFailures:
        return _login_page(request, text("cmd.login_locked", lang), 429)
    if token is None:
        return _login_page(request, text("cmd.login_wrong", lang), 401)
    request.session[TOKEN_KEY] = token
    renew_csrf(request, CSRF_KEY)  # a fresh token once logged in
    return RedirectResponse("/commander", status_code=303)


@router.post("/commander/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """End the operator's session (server side too: the old cookie no longer works)."""
    form = await request.form()
    if not csrf_ok(request, CSRF_KEY, form.get(FIELD)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    token = request.session.pop(TOKEN_KEY, None)
    if isinstance(token, str):
        operators(request).logout(token)
    return RedirectResponse(LOGIN, status_code=303)


@router.post("/commander/appeals/{appeal_id}", include_in_schema=False)
async def decide(request: Request, appeal_id: str) -> Response:
    """An operator marks an open appeal upheld or rejected."""
    operator = logged_in(request)
    if operator is None:
        return RedirectResponse(LOGIN, status_code=303)
    form = await request.form()
    lang = negotiate(request)
    if not csrf_ok(request, CSRF_KEY, form.get(FIELD)):
        return render(request, "error.html", {"reason": text("cmd.csrf", lang), "back": "/commander"}, 403)
    decision = form.get("decision")
    try:
        data.decide_appeal(_run(request), appeal_id, str(decision), operator)
    except ValueError as exc:
        return render(request, "error.html", {"reason": str(exc), "back": "/commander"}, 400)
    except data.AppealError as exc:
        return render(request, "error.html", {"reason": str(exc), "back": "/commander"}, 404)
    return RedirectResponse("/commander#appeals", status_code=303)


def _county_rows(counts: dict[str, dict[str, int]], delta: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {
            "code": county,
            "name_zh": region_name(county, "zh") if county != OTHER else "外地",
            "name_en": region_name(county, "en") if county != OTHER else "Outside the city",
            **by,
            "total": sum(by.values()),
            "change": delta.get(county, {}),
        }
        for county, by in counts.items()
    ]


def _latest(run: Path) -> data.Epoch | None:
    known = data.epochs(run)
    return known[-1] if known else None


@router.get("/commander", include_in_schema=False)
def dashboard(request: Request) -> Response:
    """The dashboard: codes by county, change, map, curve, cases, regions, refusals, revocations, appeals."""
    user = logged_in(request)
    if user is None:
        return RedirectResponse(LOGIN, status_code=303)
    run, lang = _run(request), negotiate(request)
    latest = _latest(run)
    as_of = latest.as_of if latest else None
    counts = data.colour_by_county(run, latest.epoch) if latest else {}
    change = data.change(run)

    def county_name(code: str) -> str:
        return text("cmd.other", lang) if code == OTHER else region_name(code, lang)

    context = {
        "user": user,
        "csrf": csrf_token(request, CSRF_KEY),
        "refresh": REFRESH_SECONDS,
        "epoch": latest,
        "counties": _county_rows(counts, change["counties"]),
        "county_name": county_name,
        "region_name": functools.partial(region_name, lang=lang),
        "change": change,
        "county_chart": charts.county_bars(counts, county_name, text("cmd.by_county", lang)),
        "curve_chart": charts.epidemic_curve(
            data.curve(run, as_of),
            (text("cmd.by_onset", lang), text("cmd.by_report", lang)),
            text("cmd.curve", lang),
        ),
        "map_chart": charts.cell_map(data.cell_risk(run), text("cmd.map", lang)),
        "exposure_legend": [("0", charts.QUIET)] + [(f"≥ {n}", fill) for n, fill in charts.EXPOSURE_STEPS],
        "cases": data.cases(run, as_of),
        "regions": data.risk_regions(run, as_of),
        "refusals": data.refusals(run, latest.epoch) if latest else {"total": 0, "by_reason": {}, "rows": []},
        "revocations": data.revocations(run),
        "appeals": data.appeals(run),
        "checkpoints": data.checkpoint_counts(run),
        "venues": data.venue_counts(run),
    }
    return render(request, "commander.html", context)


@api.get("/summary")
def summary(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """The latest epoch, codes by colour now and the epoch before, and the counts of every table."""
    run = _run(request)
    latest = _latest(run)
    as_of = latest.as_of if latest else None
    return {
        "epoch": latest.epoch if latest else None,
        "as_of": as_of,
        "change": data.change(run),
        "cases": data.cases(run, as_of)["total"],
        "refusals": data.refusals(run, latest.epoch)["total"] if latest else 0,
        "revocations": data.revocations(run)["total"],
        "appeals": data.appeals(run)["by_status"],
        "scans": data.checkpoint_counts(run)["total"],
    }


@api.get("/counties")
def counties(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Codes of the latest epoch by county (GB/T 2260 code, its names) and colour, with the change since
    the epoch before. A code counts in the county its holder's id is registered in; `other` outside."""
    run = _run(request)
    latest = _latest(run)
    counts = data.colour_by_county(run, latest.epoch) if latest else {}
    return {
        "epoch": latest.epoch if latest else None,
        "as_of": latest.as_of if latest else None,
        "counties": _county_rows(counts, data.change(run)["counties"]),
    }


@api.get("/change")
def change(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Codes by colour in the latest epoch and the one before, and the difference (in total, per county)."""
    return data.change(_run(request))


@api.get("/curve")
def curve(request: Request, _: str = Depends(require_operator)) -> list[dict[str, Any]]:
    """Cases known by the latest epoch, per day by onset date and by report date."""
    latest = _latest(_run(request))
    return data.curve(_run(request), latest.as_of if latest else None)


@api.get("/cases")
def cases(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Cases known by the latest epoch (masked ids, newest report first)."""
    latest = _latest(_run(request))
    return data.cases(_run(request), latest.as_of if latest else None)


@api.get("/risk-regions")
def risk_regions(request: Request, _: str = Depends(require_operator)) -> list[dict[str, str]]:
    """Risk regions in force on the latest epoch's date."""
    latest = _latest(_run(request))
    return data.risk_regions(_run(request), latest.as_of if latest else None)


@api.get("/cells")
def cells(request: Request, _: str = Depends(require_operator)) -> list[dict[str, Any]]:
    """The city's cells with their distinct matched cell-hours (the map's data)."""
    frame = data.cell_risk(_run(request))
    return [
        {"cell_id": int(c), "region_code": r, "x_km": float(x), "y_km": float(y), "exposures": int(n)}
        for c, r, x, y, n in zip(
            frame["cell_id"],
            frame["region_code"],
            frame["x_km"],
            frame["y_km"],
            frame["exposures"],
            strict=True,
        )
    ]


@api.get("/refusals")
def refusals(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Applicants the latest epoch refused, by reason (masked ids)."""
    latest = _latest(_run(request))
    return data.refusals(_run(request), latest.epoch) if latest else {"total": 0, "by_reason": {}, "rows": []}


@api.get("/revocations")
def revocations(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Revoked codes, newest first."""
    return data.revocations(_run(request))


@api.get("/appeals")
def appeals(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Citizens' appeals, open ones first."""
    return data.appeals(_run(request))


@api.get("/checkpoints")
def checkpoints(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Scans per checkpoint and result (the verifier page's anonymous counts)."""
    return data.checkpoint_counts(_run(request))


@api.get("/venues")
def venues(request: Request, _: str = Depends(require_operator)) -> dict[str, Any]:
    """Venue check-ins scanned through the service, per kind of venue: on the run's day and in all."""
    return data.venue_counts(_run(request))
