"""The table-driven base45 encoder gives what the reference implementation gives (RFC 9285)."""

from __future__ import annotations

import base45
from hypothesis import given
from hypothesis import strategies as st

from crypto.codes import b45decode, b45encode


def test_rfc_9285_examples() -> None:
    assert b45encode(b"AB") == "BB8"
    assert b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45encode(b"base-45") == "UJCLQE7W581"
    assert b45encode(b"") == ""


@given(st.binary(max_size=300))
def test_equals_the_reference_encoder_and_round_trips(data: bytes) -> None:
    assert b45encode(data) == base45.b45encode(data).decode("ascii")
    assert b45decode(b45encode(data)) == data
