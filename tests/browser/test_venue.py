"""The venue app in Chromium against a real `healthpsi serve` and police node: an operator registers a venue
and prints its code (the QR read back from the rendered page is the signed venue code), a citizen scans that
printed code from an image on the citizen page and is shown their own code with the venue's name, and the
gate board, refreshing itself, counts the check-in."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from coordinator.qr import read_qr_png
from service.venue.keys import venue_key
from tests.browser.test_citizen import apply
from tests.servers import ServiceProcess, outbox_code, unclaimed_people

Shot = Callable[[Page, str], Path]


def register(page: Page, service: ServiceProcess, lang: str) -> None:
    """Fill in and send the registration form (a market placed by position)."""
    page.goto(f"{service.url}/venue?lang={lang}")
    page.fill("#venue-name", "湖滨区东风菜市场")
    page.select_option("#venue-kind", "market")
    page.select_option("#venue-region", "411202")
    page.fill("#venue-x", "1.5")
    page.fill("#venue-y", "2.5")
    page.fill("#venue-address", "东风路 18 号")
    page.click("#venue-form button[type=submit]")
    page.wait_for_selector("article.venue-poster")


def test_register_print_scan_from_an_image_show_the_code_and_the_gate_counts(
    new_page: Callable[..., Page], service: ServiceProcess, service_run: Path, screenshot: Shot
) -> None:
    operator = new_page(locale="zh-CN")
    operator.goto(f"{service.url}/venue")
    screenshot(operator, "venue-register-zh")
    register(operator, service, "zh")
    screenshot(operator, "venue-print-zh")
    poster = operator.locator("article.venue-poster")
    venue_id = poster.get_attribute("data-venue-id") or ""
    printed = operator.locator(".poster-qr svg").screenshot()
    assert venue_key(service_run).read(read_qr_png(printed)).venue_id == venue_id

    operator.click("#gate-link")
    operator.wait_for_selector("#count-today")
    assert operator.locator("#count-today").inner_text() == "0"

    visitor = new_page(locale="en-US")
    phone = "13600000001"
    visitor.goto(f"{service.url}/citizen?lang=en")
    visitor.fill("#phone", phone)
    visitor.click("#otp-form button[type=submit]")
    visitor.wait_for_selector("#otp")
    visitor.fill("#otp", outbox_code(service_run, phone))
    visitor.click("#signin-form button[type=submit]")
    visitor.wait_for_selector("#apply-form")
    person = unclaimed_people(service_run, 60)[-1]
    apply(visitor, person, "self", phone)
    visitor.wait_for_selector("article.health-code")
    code_id = visitor.locator("article.health-code").get_attribute("data-code-id") or ""
    visitor.goto(f"{service.url}/citizen")
    visitor.wait_for_selector("#checkin-form")
    screenshot(visitor, "venue-citizen-checkin-en")
    image = {"name": "venue.png", "mimeType": "image/png", "buffer": printed}
    visitor.set_input_files("#checkin-upload", files=[image])
    visitor.wait_for_selector("section.checked-in")
    screenshot(visitor, "venue-checked-in-en")
    assert visitor.locator(".checked-in .venue-name").inner_text() == "湖滨区东风菜市场"
    assert visitor.locator("article.health-code").get_attribute("data-code-id") == code_id

    with sqlite3.connect(service_run / "venues" / "venues.sqlite") as db:
        rows = db.execute("SELECT subject_id FROM checkins WHERE venue_id = ?", (venue_id,)).fetchall()
    assert rows == [(person["subject_id"],)]
    # the gate board refreshes itself: no reload here
    expect(operator.locator("#count-today")).to_have_text("1", timeout=60_000)
    assert operator.locator("#count-hour").inner_text() == "1"
    screenshot(operator, "venue-gate-zh")


def test_the_venue_pages_in_english(
    new_page: Callable[..., Page], service: ServiceProcess, screenshot: Shot
) -> None:
    page = new_page(locale="en-US")
    register(page, service, "en")
    assert page.locator(".poster-title").inner_text() == "Venue code"
    screenshot(page, "venue-print-en")
