"""Index tags, label keys and sealed labels."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import labels
from crypto.errors import LabelError

Y = bytes(range(64))
TAG, KEY = labels.derive_tag_key(Y)
BODIES = st.lists(st.integers(0, 10**17 - 1), max_size=40)


def _hkdf(y: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(y)


@settings(max_examples=50, deadline=None)
@given(y=st.binary(min_size=64, max_size=64))
def test_tag_and_key_are_hkdf_sha256_with_the_design_infos(y: bytes) -> None:
    tag, key = labels.derive_tag_key(y)
    assert tag == _hkdf(y, b"healthpsi tag", 16) == labels.derive_tag(y)
    assert key == _hkdf(y, b"healthpsi label", 32)


def test_padded_sizes() -> None:
    assert [labels.padded_entries(n) for n in range(10)] == [1, 1, 2, 4, 4, 8, 8, 8, 8, 16]
    for n, entries in [(0, 1), (1, 1), (2, 2), (3, 4), (5, 8), (9, 16)]:
        sealed = labels.seal(KEY, list(range(n)))
        assert len(sealed) == 8 * entries + 16


def test_plaintext_layout_is_sorted_big_endian_then_all_ones() -> None:
    sealed = labels.seal(KEY, [41012319900101001, 11010519491231002, 41012319900101001])
    plain = AESGCM(KEY).decrypt(bytes(12), sealed, None)
    assert plain == ((11010519491231002).to_bytes(8, "big") + (41012319900101001).to_bytes(8, "big"))
    sealed = labels.seal(KEY, [3, 2, 1])
    plain = AESGCM(KEY).decrypt(bytes(12), sealed, None)
    assert plain == b"".join(n.to_bytes(8, "big") for n in (1, 2, 3)) + b"\xff" * 8


@settings(max_examples=100, deadline=None)
@given(bodies=BODIES)
def test_round_trip(bodies: list[int]) -> None:
    assert labels.open_label(KEY, labels.seal(KEY, bodies)) == sorted(set(bodies))


@settings(max_examples=200, deadline=None)
@given(bodies=BODIES, bit=st.integers(0, 10**6))
def test_any_bit_flip_fails_to_open(bodies: list[int], bit: int) -> None:
    sealed = bytearray(labels.seal(KEY, bodies))
    bit %= 8 * len(sealed)
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(LabelError, match="does not open"):
        labels.open_label(KEY, bytes(sealed))


@settings(max_examples=50, deadline=None)
@given(bodies=BODIES)
def test_seal_packed_gives_the_same_bytes_as_seal(bodies: list[int]) -> None:
    packed = b"".join(body.to_bytes(8, "big") for body in sorted(set(bodies)))
    assert labels.seal_packed(KEY, packed) == labels.seal(KEY, bodies)
    with pytest.raises(LabelError, match="multiple of 8"):
        labels.seal_packed(KEY, packed + b"\x00")


def test_wrong_key_fails() -> None:
    _, other = labels.derive_tag_key(bytes(64))
    with pytest.raises(LabelError, match="does not open"):
        labels.open_label(other, labels.seal(KEY, [1, 2]))


@settings(max_examples=200, deadline=None)
@given(
    sealed=st.one_of(st.binary(max_size=100), st.none(), st.integers(), st.text(max_size=30)),
    key=st.one_of(st.just(KEY), st.binary(max_size=40), st.none()),
)
def test_garbage_raises_label_error(sealed: Any, key: Any) -> None:
    with pytest.raises(LabelError):
        labels.open_label(key, sealed)


def _sealed_plain(plain: bytes) -> bytes:
    return AESGCM(KEY).encrypt(bytes(12), plain, None)


@pytest.mark.parametrize(
    ("plain", "problem"),
    [
        (b"\x00" * 12, "power-of-two"),
        (b"\x00" * 24, "power-of-two"),
        ((2).to_bytes(8, "big") + (1).to_bytes(8, "big"), "ascending"),
        ((1).to_bytes(8, "big") * 2, "ascending"),
        (b"\xff" * 8 + (1).to_bytes(8, "big"), "follows padding"),
        ((1).to_bytes(8, "big") + b"\xff" * 24, "entries for 1 subjects"),
    ],
)
def test_malformed_contents_are_named(plain: bytes, problem: str) -> None:
    with pytest.raises(LabelError, match=problem):
        labels.open_label(KEY, _sealed_plain(plain))


def test_all_padding_label_opens_empty() -> None:
    assert labels.open_label(KEY, _sealed_plain(b"\xff" * 8)) == []


def test_seal_rejects_bad_bodies_and_keys() -> None:
    with pytest.raises(LabelError, match="must lie in"):
        labels.seal(KEY, [-1])
    with pytest.raises(LabelError, match="must lie in"):
        labels.seal(KEY, [2**64 - 1])
    with pytest.raises(LabelError, match="integers"):
        labels.seal(KEY, ["12"])  # type: ignore[list-item]
    with pytest.raises(LabelError, match="label key"):
        labels.seal(KEY[:16], [1])
    with pytest.raises(LabelError, match="PRF output"):
        labels.derive_tag_key("y")  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="PRF output"):
        labels.derive_tag(None)  # type: ignore[arg-type]
