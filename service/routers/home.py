"""The landing page and the service's own health check."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from service.pages import render

router = APIRouter()


@router.get("/", include_in_schema=False)
def index(request: Request) -> Response:
    """The landing page: the party apps this service runs."""
    return render(request, "index.html")


@router.get("/api/v1/health", tags=["service"])
def health() -> dict[str, str]:
    """Liveness: the service answers."""
    return {"status": "ok"}
