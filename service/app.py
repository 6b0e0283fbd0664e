"""The ASGI application: settings, middleware, static assets and one router per enabled party app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from service.middleware import ServiceMiddleware
from service.routers import citizen, commander, cotravel, home, host, venue, verifier
from service.settings import ServiceSettings

STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At shutdown, the citizen desk signs a head over what this worker wrote to the service's audit log;
    the venue app delivers its journal's check-ins while it runs and once more at shutdown."""
    deliveries = venue.start_deliveries(app) if "venue" in app.state.settings.apps else None
    yield
    if deliveries is not None:
        await venue.stop_deliveries(app, deliveries)
    desk = getattr(app.state, "citizen_desk", None)
    if desk is not None:
        desk.close()


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service for `settings`: APIs under /api/v1 (OpenAPI at /docs) and server-rendered pages."""
    app = FastAPI(
        title="healthpsi code service",
        version="1",
        description="Apply for, show and verify health codes; watch the epidemic.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key().hex(),
        session_cookie="healthpsi_session",
        max_age=settings.session_max_age,
        same_site="strict",
        https_only=False,
    )
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(home.router)
    if "verifier" in settings.apps:
        app.include_router(verifier.router)
    if "citizen" in settings.apps:
        app.include_router(citizen.router)
        app.include_router(cotravel.router)
    if "venue" in settings.apps:
        app.include_router(venue.router)
    if "commander" in settings.apps:
        app.include_router(commander.router)
        app.include_router(commander.api)
    if "host" in settings.apps:
        app.include_router(host.router)
    return app


def create_app_from_env() -> FastAPI:
    """The factory each uvicorn worker calls: settings from the environment `healthpsi serve` set."""
    return create_app(ServiceSettings.from_env())
