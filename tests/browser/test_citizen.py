"""The citizen pages in Chromium against a real `healthpsi serve` and police node: sign in with the one-time
code from the SMS outbox, apply, show the code (its QR read back from the rendered page and verified
offline), apply for family, appeal — and a second citizen sees none of it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from coordinator.qr import read_qr_png
from tests.servers import ServiceProcess, outbox_code, republish_trust_list, unclaimed_people

Shot = Callable[[Page, str], Path]
_phones = iter(range(13700000000, 13799999999))


@pytest.fixture(scope="module")
def people(service_run: Path) -> Iterator[dict[str, str]]:
    """People of the register without a code yet, one per call."""
    return iter(unclaimed_people(service_run, 12))


def sign_in(
    page: Page, service: ServiceProcess, run: Path, lang: str = "en", shot: Shot | None = None
) -> str:
    """Sign in through the page with a fresh phone and the code the SMS outbox received; the phone."""
    phone = str(next(_phones))
    page.goto(f"{service.url}/citizen?lang={lang}")
    if shot is not None:
        shot(page, f"citizen-sign-in-{lang}")
    page.fill("#phone", phone)
    page.click("#otp-form button[type=submit]")
    page.wait_for_selector("#otp")
    page.fill("#otp", outbox_code(run, phone))
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#apply-form")
    return phone


def apply(
    page: Page, person: dict[str, str], relation: str, phone: str, symptoms: tuple[str, ...] = ()
) -> None:
    """Fill in and send the application form."""
    page.check(f"input[name=relation][value={relation}]")
    page.fill("#name", person["name"])
    page.fill("#subject_id", person["subject_id"])
    page.fill("#birth_date", person["birth_date"])
    page.fill("#member_phone", phone)
    for symptom in symptoms:
        page.check(f"input[name=symptoms][value={symptom}]")
    page.click("#apply-form button[type=submit]")


def stored(run: Path, code_id: str) -> tuple[str, str]:
    """(colour, subject id) of a stored code."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        row = db.execute("SELECT color, subject_id FROM codes WHERE code_id = ?", (code_id,)).fetchone()
    assert row is not None, f"code {code_id} is not in codes.sqlite"
    return str(row[0]), str(row[1])


def verify(run: Path, payload: str, at: str) -> dict[str, object]:
    """`healthpsi verify --trust RUN/pki/trustlist.json --at AT --json` of a payload (must exit 0), the trust
    list re-published at AT."""
    republish_trust_list(run, at)
    cmd = [sys.executable, "-m", "healthpsi.cli", "verify", payload]
    cmd += ["--trust", str(run / "pki" / "trustlist.json"), "--at", at, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def test_a_citizen_applies_and_shows_a_code_whose_qr_verifies(
    page: Page, service: ServiceProcess, service_run: Path, people: Iterator[dict[str, str]], screenshot: Shot
) -> None:
    phone = sign_in(page, service, service_run, shot=screenshot)
    screenshot(page, "citizen-signed-in-en")
    person = next(people)
    apply(page, person, "self", phone, symptoms=("cough",))
    page.wait_for_selector("article.health-code")
    screenshot(page, "citizen-code-en")

    card = page.locator("article.health-code")
    code_id = card.get_attribute("data-code-id") or ""
    colour, subject = stored(service_run, code_id)
    assert subject == person["subject_id"]
    assert card.get_attribute("data-color") == colour
    assert colour in (card.get_attribute("class") or "").split()
    payload = read_qr_png(page.locator(".qr svg").screenshot())
    issued_at = page.locator("article.health-code").get_attribute("data-issued-at") or ""
    report = verify(service_run, payload, issued_at)
    assert report["valid"] is True
    claims = report["claims"]
    assert isinstance(claims, dict) and claims["hcp"]["c"] == colour and claims["hcp"]["id"] == code_id
    # masked name and id, the live clock and the countdown's anchor
    assert page.locator(".holder .name").inner_text() == claims["hcp"]["n"]
    assert page.locator(".holder .sid").inner_text() == claims["hcp"]["sid"]
    assert page.locator("[data-clock]").count() == 1
    assert page.locator("[data-expires]").get_attribute("data-expires") == report_expiry(service_run, code_id)
    assert person["name"] not in page.content() and person["subject_id"] not in page.content()


def report_expiry(run: Path, code_id: str) -> str:
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        return str(db.execute("SELECT expires_at FROM codes WHERE code_id = ?", (code_id,)).fetchone()[0])


def test_a_family_application_without_javascript(
    new_page: Callable[..., Page],
    service: ServiceProcess,
    service_run: Path,
    people: Iterator[dict[str, str]],
    screenshot: Shot,
) -> None:
    page = new_page(locale="zh-CN", java_script_enabled=False)
    sign_in(page, service, service_run, lang="zh", shot=screenshot)
    member = next(people)
    member_phone = str(next(_phones))
    apply(page, member, "family", member_phone)
    page.wait_for_selector("article.health-code")
    screenshot(page, "citizen-family-code-zh")
    code_id = page.locator("article.health-code").get_attribute("data-code-id") or ""
    colour, subject = stored(service_run, code_id)
    assert subject == member["subject_id"]
    assert (
        page.locator(".colour-name").inner_text()
        == {"green": "绿码", "yellow": "黄码", "red": "红码"}[colour]
    )
    with sqlite3.connect(service_run / "coordinator" / "codes.sqlite") as db:
        relation, phone = db.execute(
            "SELECT relation, phone FROM applications WHERE code_id = ?", (code_id,)
        ).fetchone()
    assert (relation, phone) == ("family", member_phone)
    page.goto(f"{service.url}/citizen")
    assert page.locator(f"a[href='/citizen/codes/{code_id}']").count() == 1
    assert "家人" in page.locator(".codes").inner_text()
    screenshot(page, "citizen-my-codes-zh")


def test_a_refused_identity_is_shown_the_reason(
    page: Page, service: ServiceProcess, service_run: Path, people: Iterator[dict[str, str]], screenshot: Shot
) -> None:
    phone = sign_in(page, service, service_run)
    person = next(people)
    apply(page, {**person, "name": person["name"][0] + "某某"}, "self", phone)
    page.wait_for_selector(".refusal")
    assert "population register" in page.locator(".refusal").inner_text()
    screenshot(page, "citizen-refused-en")


def test_an_appeal_is_stored_and_private_to_its_citizen(
    new_page: Callable[..., Page],
    page: Page,
    service: ServiceProcess,
    service_run: Path,
    people: Iterator[dict[str, str]],
    screenshot: Shot,
) -> None:
    phone = sign_in(page, service, service_run)
    apply(page, next(people), "self", phone)
    page.wait_for_selector("article.health-code")
    code_url = page.url
    code_id = page.locator("article.health-code").get_attribute("data-code-id") or ""
    page.fill("#reason", "I was at home on those days; my building's records show it.")
    page.click("#appeal-form button[type=submit]")
    page.wait_for_selector(".ok-notice")
    assert "Open" in page.locator(".appeals").inner_text()
    screenshot(page, "citizen-appeal-en")
    with sqlite3.connect(service_run / "coordinator" / "codes.sqlite") as db:
        rows = db.execute(
            "SELECT code_id, reason, status FROM appeals WHERE code_id = ?", (code_id,)
        ).fetchall()
    assert rows == [(code_id, "I was at home on those days; my building's records show it.", "open")]

    second = new_page(locale="en-US")
    sign_in(second, service, service_run)
    response = second.goto(code_url)
    assert response is not None and response.status == 404
    assert "my building" not in second.content() and code_id not in second.content()
    screenshot(second, "citizen-other-code-404-en")
