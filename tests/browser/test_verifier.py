"""The verifier page in Chromium: loaded once, then with the service stopped and the browser offline,
it checks codes from image uploads on the device — the run's codes in their database colour, a tampered one,
a revoked one, a second issuer's valid and revoked codes (each issuer's own signed revocation list), a code
naming another issuer than its key's, an unknown signer, an expired one, something that is not a code, and
an EU DCC (`HC1:`); it refuses lists older than their max_age at the device's clock; and it scans codes from
Chromium's fake camera fed with a Y4M video of the QR image."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright

from coordinator.claims import health_claims
from coordinator.qr import qr_png
from crypto.codes import issue_code
from crypto.drbg import default_rng
from crypto.pki import (
    FORMAT_DCC,
    FORMAT_HEALTHPSI,
    REVOCATIONS_MAX_AGE,
    ec_private_key,
    issue_certificate,
    load_certificate,
    load_ec_private_key,
    make_revocations,
    make_trust_list,
    parse_certificate,
    spki_kid,
)
from runctx.pki import PkiPaths, save_json, write_revocations
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, PHONE_VIEWPORT
from tests.browser.media import high_s_twin, qr_y4m, recoloured
from tests.servers import ServiceProcess

TESTDATA = next(
    p / "shared" / "testdata"
    for p in Path(__file__).resolve().parents
    if (p / "shared" / "testdata").is_dir()
)
DCC_CASE = TESTDATA / "dcc" / "DE" / "2DCode" / "raw" / "1.json"
"""An EU DCC whose kid sits in the unprotected header."""
RESULT_TIMEOUT = 30_000
SECOND_ISSUER = "410100"
"""Zhengzhou: a second issuing authority on the checkpoint's trust list, with its own key and revocations."""


@dataclass(frozen=True)
class Case:
    """A payload to show the verifier, the screen it must give, and the reason for an invalid one."""

    name: str
    payload: str
    result: str
    reason: str = ""


@dataclass(frozen=True)
class Checkpoint:
    """A copy of the run's PKI and codes for the verifier tests (a code revoked, an EU DCC signer trusted)."""

    run: Path
    device_time: dt.datetime
    cases: dict[str, Case]
    dcc: Case
    dcc_time: dt.datetime


@pytest.fixture(scope="module")
def checkpoint(service_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """The run's scenario, PKI and codes copied; one green code revoked, a second issuer (its key certified by
    the run's root, one of its two codes revoked by its own list) and the DE test signer added to a trust list
    re-signed by the run's root."""
    run = tmp_path_factory.mktemp("checkpoint") / "run"
    run.mkdir()
    shutil.copy2(service_run / "scenario.json", run / "scenario.json")
    shutil.copytree(service_run / "pki", run / "pki")
    source = sqlite3.connect(service_run / "coordinator" / "codes.sqlite")
    rows = source.execute("SELECT code_id, color, issued_at, payload FROM codes ORDER BY code_id").fetchall()
    source.close()
    by_colour: dict[str, list[tuple[str, str, str, str]]] = {}
    for row in rows:
        by_colour.setdefault(row[1], []).append(row)
    assert {"green", "red"} <= set(by_colour), f"the run's codes have colours {sorted(by_colour)}"
    issued = dt.datetime.fromisoformat(rows[0][2].replace("Z", "+00:00"))
    paths = PkiPaths(run)
    revoked = by_colour["green"][1]
    write_revocations(paths, [revoked[0]], issued_at=issued)
    root_cert = load_certificate(paths.root_cert)
    root_key = load_ec_private_key(paths.root_key)
    second = ec_private_key()
    second_cert = issue_certificate(
        f"{SECOND_ISSUER} code signing", second.public_key(), root_key, root_cert, rng=default_rng(None),
        not_before=issued - dt.timedelta(days=1), not_after=issued + dt.timedelta(days=365),
    )
    second_kid = spki_kid(second.public_key())

    def claims(code_id: str, issuer: str) -> dict[int, object]:
        return health_claims(
            code_id=code_id,
            issuer=issuer,
            colour="green",
            policy_version="1",
            name="王小明",
            subject_id="410101199001011234",
            issued_at=issued,
        )

    save_json(
        paths.issuer_dir(SECOND_ISSUER) / "revocations.json",
        make_revocations(["zz-revoked"], second, issued_at=issued, issuer=SECOND_ISSUER),
    )
    stranger = ec_private_key()
    cases = {f"valid-{c}": Case(f"valid-{c}", by_colour[c][0][3], c) for c in sorted(by_colour)}
    cases.update(
        {
            "tampered": Case(
                "tampered", recoloured(by_colour["red"][0][3], "green"), "invalid", "bad-signature"
            ),
            "revoked": Case("revoked", revoked[3], "invalid", "revoked"),
            "high-s": Case("high-s", high_s_twin(by_colour["green"][0][3]), "invalid", "bad-signature"),
            "unknown-key": Case(
                "unknown-key",
                issue_code(claims("stranger", "elsewhere"), stranger, spki_kid(stranger.public_key())),
                "invalid",
                "unknown-key",
            ),
            "second-issuer": Case(
                "second-issuer", issue_code(claims("zz-valid", SECOND_ISSUER), second, second_kid), "green"
            ),
            "second-issuer-revoked": Case(
                "second-issuer-revoked",
                issue_code(claims("zz-revoked", SECOND_ISSUER), second, second_kid),
                "invalid",
                "revoked",
            ),
            "wrong-issuer": Case(
                "wrong-issuer",
                issue_code(claims("zz-forged", paths.home_issuer), second, second_kid),
                "invalid",
                "wrong-issuer",
            ),
            "not-a-code": Case(
                "not-a-code", "https://example.org/not-a-health-code", "invalid", "not-a-code"
            ),
        }
    )
    dcc = json.loads(DCC_CASE.read_text())
    signer = parse_certificate(dcc["TESTCTX"]["CERTIFICATE"])
    entries = [
        (load_certificate(paths.signing_cert), FORMAT_HEALTHPSI, paths.home_issuer),
        (second_cert, FORMAT_HEALTHPSI, SECOND_ISSUER),
        (signer, FORMAT_DCC, ""),
    ]
    save_json(paths.trustlist, make_trust_list(entries, root_cert, root_key, issued_at=issued))
    clock = dt.datetime.fromisoformat(dcc["TESTCTX"]["VALIDATIONCLOCK"])
    return Checkpoint(
        run, issued + dt.timedelta(hours=1), cases, Case("eu-dcc", dcc["PREFIX"], "green"), clock
    )


def colour_in_database(service_run: Path, payload: str) -> str:
    """The colour the coordinator's database holds for a code's payload."""
    with sqlite3.connect(service_run / "coordinator" / "codes.sqlite") as db:
        return str(db.execute("SELECT color FROM codes WHERE payload = ?", (payload,)).fetchone()[0])


def show(page: Page, png: bytes, name: str) -> tuple[str, str]:
    """Upload a QR image to the verifier; the result screen's (result, reason)."""
    page.set_input_files("#upload", files=[{"name": f"{name}.png", "mimeType": "image/png", "buffer": png}])
    page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT)
    result = page.get_attribute("#result", "data-result") or ""
    reason = page.get_attribute("#result", "data-reason") or ""
    return result, reason


def close_result(page: Page) -> None:
    """Dismiss the result screen."""
    page.click("#result-close")
    page.wait_for_selector("#result", state="hidden")


def wait_ready(page: Page) -> None:
    """Wait until both signed lists are checked."""
    page.wait_for_selector("#lists-status[data-state=ready]", timeout=RESULT_TIMEOUT)


def test_verifier_checks_codes_offline_from_uploaded_images(
    browser: Browser, checkpoint: Checkpoint, service_run: Path, screenshot: Callable[[Page, str], Path]
) -> None:
    server = ServiceProcess(checkpoint.run, "--app", "verifier").wait_ready()
    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, locale="en-US")
    try:
        page = context.new_page()
        page.clock.install(time=checkpoint.device_time)
        page.goto(f"{server.url}/verifier?lang=en")
        wait_ready(page)
        page.wait_for_selector("#offline-status[data-state=ready]", timeout=RESULT_TIMEOUT)
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=RESULT_TIMEOUT)
        screenshot(page, "verifier-en")
        server.stop()
        context.set_offline(True)
        page.reload()
        wait_ready(page)
        assert "Trust and revocation lists verified" in page.inner_text("#lists-status")
        for case in checkpoint.cases.values():
            result, reason = show(page, qr_png(case.payload), case.name)
            assert (result, reason) == (case.result, case.reason), case.name
            if case.name.startswith("valid-"):
                assert result == colour_in_database(service_run, case.payload)
                assert "*" in page.inner_text("#result-name")  # the masked name
            screenshot(page, f"verifier-offline-{case.name}")
            close_result(page)
        page.clock.set_system_time(checkpoint.device_time + dt.timedelta(days=2))
        valid = checkpoint.cases["valid-green"]
        assert show(page, qr_png(valid.payload), "expired") == ("invalid", "expired")
        screenshot(page, "verifier-offline-expired")
        close_result(page)
        page.clock.set_system_time(checkpoint.dcc_time)
        assert show(page, qr_png(checkpoint.dcc.payload), "eu-dcc") == ("green", "")
        screenshot(page, "verifier-offline-eu-dcc")
    finally:
        context.close()
        server.stop()


@pytest.fixture(scope="module")
def checkpoint_service(checkpoint: Checkpoint) -> Iterator[ServiceProcess]:
    """`healthpsi serve --app verifier` over the checkpoint's copy of the run."""
    server = ServiceProcess(checkpoint.run, "--app", "verifier").wait_ready()
    try:
        yield server
    finally:
        server.stop()


def test_verifier_refuses_lists_older_than_their_max_age(
    browser: Browser, checkpoint: Checkpoint, checkpoint_service: ServiceProcess
) -> None:
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="en-US")
    try:
        page = context.new_page()
        stale = checkpoint.device_time + REVOCATIONS_MAX_AGE + dt.timedelta(hours=1)
        page.clock.install(time=stale)
        page.goto(f"{checkpoint_service.url}/verifier?lang=en")
        page.wait_for_selector("#lists-status[data-state=failed]", timeout=RESULT_TIMEOUT)
        assert "is stale" in page.inner_text("#lists-status")
        page.fill("#paste", checkpoint.cases["valid-green"].payload)
        page.click("#paste-form button[type=submit]")
        page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT)
        assert page.get_attribute("#result", "data-reason") == "no-lists"
    finally:
        context.close()


def scans(run: Path, checkpoint_name: str, result: str) -> int:
    """The anonymous count of scans with `result` at a checkpoint today (0 when none)."""
    path = run / "service" / "counts.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT SUM(n) FROM scans WHERE checkpoint = ? AND result = ?", (checkpoint_name, result)
        ).fetchone()
    return int(row[0] or 0)


@pytest.mark.parametrize("name", ["valid-red", "valid-green", "tampered", "revoked"])
def test_verifier_scans_a_code_from_the_camera(
    name: str,
    playwright_driver: Playwright,
    checkpoint: Checkpoint,
    checkpoint_service: ServiceProcess,
    tmp_path: Path,
    screenshot: Callable[[Page, str], Path],
) -> None:
    case = checkpoint.cases[name]
    video = qr_y4m(qr_png(case.payload), tmp_path / f"{name}.y4m")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    camera_browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        context = camera_browser.new_context(viewport=PHONE_VIEWPORT, locale="zh-CN", permissions=["camera"])
        page = context.new_page()
        page.clock.install(time=checkpoint.device_time)
        page.goto(f"{checkpoint_service.url}/verifier")
        wait_ready(page)
        before = scans(checkpoint.run, "gate-7", case.result)
        page.fill("#checkpoint", "gate-7")
        page.click("#scan-start")
        page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT)
        assert page.get_attribute("#result", "data-result") == case.result
        assert page.get_attribute("#result", "data-reason") == case.reason
        if case.reason:
            assert {"bad-signature": "签名无效", "revoked": "已吊销"}[case.reason] in page.inner_text(
                "#result"
            )
        screenshot(page, f"verifier-camera-{name}")
        deadline = time.monotonic() + 10
        while scans(checkpoint.run, "gate-7", case.result) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scans(checkpoint.run, "gate-7", case.result) == before + 1
    finally:
        camera_browser.close()
