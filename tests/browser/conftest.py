"""Browser-test fixtures: one small simulated run per session, its police node and `healthpsi serve` as real
processes on 127.0.0.1 (ports chosen by the OS), and Debian's Chromium driven by Playwright.

Screenshots go to `runs/screenshots/` (kept as test artefacts). Every test in this directory is marked
`browser`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.integration.conftest import NodeProcess
from tests.servers import ServiceProcess, copy_run, served

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE_VIEWPORT = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory `browser`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def service_run(run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's small run (`healthpsi run --persons 1500`, seed 7) with its epoch's codes."""
    return copy_run(run_template, tmp_path_factory.mktemp("browser") / "run")


@pytest.fixture(scope="session")
def served_run(service_run: Path) -> Iterator[tuple[NodeProcess, ServiceProcess]]:
    """The run's police node (identity checks over PSI) and `healthpsi serve` on port 0 asking it."""
    with served(service_run) as both:
        yield both


@pytest.fixture(scope="session")
def service(served_run: tuple[NodeProcess, ServiceProcess]) -> ServiceProcess:
    """`healthpsi serve` over the run; stopped with SIGTERM at the end of the session."""
    return served_run[1]


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver for the session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright's own browser download is not used)."""
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """`new_page(**context_options)`: a page in a fresh phone-sized browser context (its own cookies; e.g.
    `locale="en-US"`, `java_script_enabled=False`), closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> Page:
        context = browser.new_context(**{"viewport": PHONE_VIEWPORT, "device_scale_factor": 2, **options})
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    """A page in a fresh phone-sized browser context, Chinese locale."""
    return new_page(locale="zh-CN")


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as runs/screenshots/<name>.png; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """`screenshot(page, name)`: a full-page screenshot saved as runs/screenshots/<name>.png."""
    return save_screenshot
