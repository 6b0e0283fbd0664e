"""The browser fixtures work end to end: Chromium loads the service's landing page over the real server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from tests.servers import ServiceProcess


def test_landing_page_renders_in_chromium_with_the_security_headers(
    page: Page, service: ServiceProcess, screenshot: Callable[[Page, str], Path]
) -> None:
    response = page.goto(f"{service.url}/?lang=en")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.locator("h1").inner_text() == "Health code"
    assert screenshot(page, "home-en").stat().st_size > 0
