"""Phone one-time codes on a real SQLite state file and outbox: expiry, single use, tries, rate limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.citizen.otp import ADDRESS_LIMIT, MAX_TRIES, OTP_TTL, PHONE_LIMIT, OtpBox, OtpError

PHONE = "13812345678"


def last_code(box: OtpBox, phone: str = PHONE) -> str:
    lines = [json.loads(line) for line in box.outbox.read_text().splitlines()]
    return str([m for m in lines if m["phone"] == phone][-1]["code"])


def reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(OtpError) as caught:
        call()
    return caught.value.reason


@pytest.fixture
def box(tmp_path: Path) -> OtpBox:
    return OtpBox(tmp_path / "service", b"k" * 32)


def test_a_code_is_sent_to_the_outbox_and_accepted_once(box: OtpBox) -> None:
    box.send(PHONE, "10.0.0.1", now=1000.0)
    message = json.loads(box.outbox.read_text())
    assert message["phone"] == PHONE and len(message["code"]) == 6 and message["at"].endswith("Z")
    box.accept(PHONE, message["code"], now=1001.0)
    assert reason(lambda: box.accept(PHONE, message["code"], now=1002.0)) == "NO_CODE"


def test_the_state_file_does_not_hold_the_code_itself(box: OtpBox) -> None:
    box.send(PHONE, "10.0.0.1", now=1000.0)
    assert last_code(box).encode() not in (box.state_dir / "citizen.sqlite").read_bytes()


def test_a_code_expires(box: OtpBox) -> None:
    box.send(PHONE, "10.0.0.1", now=1000.0)
    code = last_code(box)
    assert reason(lambda: box.accept(PHONE, code, now=1000.0 + OTP_TTL)) == "EXPIRED"


def test_a_new_code_replaces_the_old_one(box: OtpBox) -> None:
    box.send(PHONE, "10.0.0.1", now=1000.0)
    old = last_code(box)
    box.send(PHONE, "10.0.0.1", now=1001.0)
    new = last_code(box)
    if old != new:
        assert reason(lambda: box.accept(PHONE, old, now=1002.0)) == "WRONG_CODE"
    box.accept(PHONE, new, now=1003.0)


def test_wrong_tries_are_counted_and_void_the_code(box: OtpBox) -> None:
    box.send(PHONE, "10.0.0.1", now=1000.0)
    code = last_code(box)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    reasons = [reason(lambda: box.accept(PHONE, wrong, now=1001.0)) for _ in range(MAX_TRIES)]
    assert reasons == ["WRONG_CODE"] * (MAX_TRIES - 1) + ["TOO_MANY_TRIES"]
    assert reason(lambda: box.accept(PHONE, code, now=1002.0)) == "NO_CODE"


def test_sends_are_limited_per_phone_within_the_window(box: OtpBox) -> None:
    limit, window = PHONE_LIMIT
    for i in range(limit):
        box.send(PHONE, f"10.0.0.{i}", now=1000.0 + i)
    with pytest.raises(OtpError) as caught:
        box.send(PHONE, "10.0.1.1", now=1000.0 + limit)
    assert caught.value.status == 429 and caught.value.retry_after == int(window - limit) + 1
    box.send(PHONE, "10.0.1.1", now=1000.0 + window + 1)  # the window has passed


def test_sends_are_limited_per_address(box: OtpBox) -> None:
    limit, _ = ADDRESS_LIMIT
    for i in range(limit):
        box.send(f"139{i:08d}", "10.9.9.9", now=1000.0 + i)
    assert reason(lambda: box.send("13700000000", "10.9.9.9", now=1000.0 + limit)) == "RATE_LIMITED"
    box.send("13700000000", "10.9.9.8", now=1000.0 + limit)
    lines = box.outbox.read_text().splitlines()
    assert len(lines) == limit + 1  # the refused request sent nothing
