"""The commander dashboard in Chromium: refused without a login, and after one it shows the codes per
county that a direct query of codes.sqlite gives."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.integration.test_service_commander import direct_county_counts, latest_epoch
from tests.servers import ServiceProcess

USER = "duty.officer"
PASSWORD = "browser-test-passphrase"


@pytest.fixture(scope="module")
def operator(service_run: Path) -> str:
    """An operator of the served run, made with `healthpsi operator add --password-stdin`."""
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "healthpsi.cli",
            *("operator", "add", "--run", str(service_run)),
            *("--user", USER, "--password-stdin"),
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert add.returncode == 0, add.stderr
    return USER


def test_the_dashboard_refuses_without_a_login(
    page: Page, service: ServiceProcess, screenshot: Callable[[Page, str], Path]
) -> None:
    page.goto(f"{service.url}/commander")
    assert page.url == f"{service.url}/commander/login"
    assert page.locator("h1").inner_text() == "操作员登录"
    assert page.request.get(f"{service.url}/api/v1/commander/counties").status == 401
    screenshot(page, "commander-login")


def test_a_wrong_password_stays_on_the_login_page(page: Page, service: ServiceProcess, operator: str) -> None:
    page.goto(f"{service.url}/commander/login?lang=en")
    page.fill("#username", operator)
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "Wrong user name or password"
    assert page.request.get(f"{service.url}/api/v1/commander/counties").status == 401


def test_after_a_login_the_dashboard_shows_the_counts_per_county(
    browser: Browser,
    service: ServiceProcess,
    service_run: Path,
    operator: str,
    screenshot: Callable[[Page, str], Path],
) -> None:
    expected, total = direct_county_counts(service_run, latest_epoch(service_run))
    for lang, viewport in (("zh", {"width": 390, "height": 844}), ("en", {"width": 1200, "height": 900})):
        context = browser.new_context(viewport=viewport)
        try:
            page = context.new_page()
            page.goto(f"{service.url}/commander/login?lang={lang}")
            page.fill("#username", operator)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{service.url}/commander")
            shown: dict[tuple[str, str], int] = {}
            for row in page.locator("tr[data-county]").all():
                county = row.get_attribute("data-county") or ""
                for colour in ("green", "yellow", "red"):
                    n = int(row.locator(f"td[data-colour={colour}]").inner_text())
                    if n:
                        shown[(county, colour)] = n
            assert shown == expected
            tiles = {
                colour: int(page.locator(f".tile[data-colour={colour}] .big").inner_text().replace(",", ""))
                for colour in ("green", "yellow", "red")
            }
            assert sum(tiles.values()) == total
            assert page.locator("#map svg rect").count() > 0
            screenshot(page, f"commander-dashboard-{lang}")
        finally:
            context.close()
