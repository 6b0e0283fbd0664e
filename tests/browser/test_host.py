"""The host pages in Chromium against a real `healthpsi serve`: a landlord signs in with the one-time code
from the SMS outbox, declares two tenants and sees them listed; a form with one wrong name shows that row's
error and writes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from playwright.sync_api import Page

from tests.servers import ServiceProcess, outbox_code

Shot = Callable[[Page, str], Path]


def deliveries(run: Path) -> dict[str, str]:
    """Every file of the police declarations dataset: path → digest."""
    root = run / "data" / "police" / "declarations"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def fill_row(page: Page, row: int, person: pd.Series, start: str, end: str, name: str | None = None) -> None:
    """Fill in one row of the declaration form."""
    at = f"#row-{row}"
    page.fill(f"{at} input[name=subject_id]", str(person["subject_id"]))
    page.fill(f"{at} input[name=name]", name or str(person["name"]))
    page.select_option(f"{at} select[name=role]", "tenant")
    page.fill(f"{at} input[name=from_date]", start)
    page.fill(f"{at} input[name=to_date]", end)


def test_a_landlord_declares_two_tenants_and_a_wrong_name_is_refused_by_row(
    page: Page, service: ServiceProcess, service_run: Path, screenshot: Shot
) -> None:
    register = pq.read_table(service_run / "data" / "police" / "population.parquet").to_pandas()
    register = register.dropna(subset=["name"]).sort_values("subject_id").reset_index(drop=True)
    with_phone = register[register["phone"].notna() & ~register["phone"].astype(str).str.startswith("137")]
    host = with_phone.iloc[-1]
    tenants = register.iloc[200:204]
    place = f"dwelling-{sorted(set(register['household_id']))[20]}"

    page.goto(f"{service.url}/host?lang=en")
    screenshot(page, "host-sign-in-en")
    page.fill("#phone", str(host["phone"]))
    page.click("#otp-form button[type=submit]")
    page.wait_for_selector("#otp")
    page.fill("#otp", outbox_code(service_run, str(host["phone"])))
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#declare-form")
    assert str(host["subject_id"])[-4:] in page.inner_text(".who")

    page.fill("#place_id", place)
    fill_row(page, 1, tenants.iloc[0], "2020-01-20", "2020-12-31")
    fill_row(page, 2, tenants.iloc[1], "2020-01-25", "2021-01-24")
    screenshot(page, "host-form-en")
    page.click("#declare-form button[type=submit]")
    page.wait_for_selector("#host-done")
    listed = page.inner_text("#declared")
    for i in (0, 1):
        sid = str(tenants.iloc[i]["subject_id"])
        assert f"{sid[:3]}***********{sid[-4:]}" in listed
    assert listed.count(place) == 2
    screenshot(page, "host-declared-en")

    before = deliveries(service_run)
    page.fill("#place_id", place)
    fill_row(page, 1, tenants.iloc[2], "2020-01-20", "2020-12-31")
    fill_row(
        page, 3, tenants.iloc[3], "2020-01-20", "2020-12-31", name=str(tenants.iloc[3]["name"])[0] + "某某"
    )
    page.click("#declare-form button[type=submit]")
    error = page.wait_for_selector("#host-error")
    assert error is not None
    message = error.inner_text()
    assert message.startswith(f"row 3: ID number {tenants.iloc[3]['subject_id']}"), message
    assert page.locator("#row-3.bad").count() == 1 and page.locator("li.person.bad").count() == 1
    assert page.input_value("#row-1 input[name=subject_id]") == str(tenants.iloc[2]["subject_id"])  # kept
    screenshot(page, "host-bad-row-en")
    assert deliveries(service_run) == before  # nothing of the form was written

    page.goto(f"{service.url}/host?lang=zh")
    assert "房东/单位反向申报" in page.inner_text("h1")
    assert page.inner_text("#declared").count(place) == 2
    screenshot(page, "host-declared-zh")
