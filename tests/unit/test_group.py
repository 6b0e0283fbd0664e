"""ristretto255 through libsodium: RFC 9496 vectors, encoding checks, scalars, and the DRBG."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import group
from crypto.drbg import Drbg, Rng, SystemRng
from crypto.errors import CryptoError, InvalidElement, InvalidScalar

# RFC 9496 Appendix A.1: encodings of [0]B .. [15]B.
MULTIPLES = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
    "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
    "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
    "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
    "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
    "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
    "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
    "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
    "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
    "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
    "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
    "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
    "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
]

# RFC 9496 Appendix A.2, with the reason each is rejected.
BAD_ENCODINGS = [
    ("00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "non-canonical"),
    ("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "non-canonical"),
    ("f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "non-canonical"),
    ("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "non-canonical"),
    ("0100000000000000000000000000000000000000000000000000000000000000", "negative"),
    ("01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "negative"),
    ("ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20", "negative"),
    ("c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562", "negative"),
    ("26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371", "decoding fails"),
    ("4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f", "decoding fails"),
    ("de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b", "decoding fails"),
    ("bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042", "decoding fails"),
    ("2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08", "decoding fails"),
    ("f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22", "decoding fails"),
    ("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "decoding fails"),
]

# RFC 9496 Appendix A.3: the one-way map of 64 uniform bytes.
FROM_UNIFORM = [
    (
        "5d1be09e3d0c82fc538112490e35701979d99e06ca3e2b5b54bffe8b4dc772c1"
        "4d98b696a1bbfb5ca32c436cc61c16563790306c79eaca7705668b47dffe5bb6",
        "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46",
    ),
    (
        "f116b34b8f17ceb56e8732a60d913dd10cce47a6d53bee9204be8b44f6678b27"
        "0102a56902e2488c46120e9276cfe54638286b9e4b3cdb470b542d46c2068d38",
        "f26e5b6f7d362d2d2a94c5d0e7602cb4773c95a2e5c31a64f133189fa76ed61b",
    ),
    (
        "8422e1bbdaab52938b81fd602effb6f89110e1e57208ad12d9ad767e2e25510c"
        "27140775f9337088b982d83d7fcf0b2fa1edffe51952cbe7365e95c86eaf325c",
        "006ccd2a9e6867e6a2c5cea83d3302cc9de128dd2a9a57dd8ee7b9d7ffe02826",
    ),
    (
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "304282791023b73128d277bdcb5c7746ef2eac08dde9f2983379cb8e5ef0517f",
    ),
]


def _scalar(n: int) -> bytes:
    return (n % group.ORDER).to_bytes(32, "little")


def test_small_multiples_of_the_generator() -> None:
    assert group.GENERATOR.hex() == MULTIPLES[1]
    for n, encoding in enumerate(MULTIPLES[1:], start=1):
        assert group.base_mult(_scalar(n)).hex() == encoding
        assert group.scalar_mult(_scalar(n), group.GENERATOR).hex() == encoding
        assert group.validate_element(bytes.fromhex(encoding)).hex() == encoding


def test_addition_matches_the_multiples() -> None:
    acc = group.IDENTITY
    for encoding in MULTIPLES[1:]:
        acc = group.element_add(acc, group.GENERATOR)
        assert acc.hex() == encoding
    assert group.element_sub(bytes.fromhex(MULTIPLES[5]), bytes.fromhex(MULTIPLES[3])).hex() == MULTIPLES[2]
    assert group.element_sub(group.GENERATOR, group.GENERATOR) == group.IDENTITY


@pytest.mark.parametrize(("encoding", "reason"), BAD_ENCODINGS)
def test_bad_encodings_are_rejected_with_the_reason(encoding: str, reason: str) -> None:
    with pytest.raises(InvalidElement, match=reason):
        group.validate_element(bytes.fromhex(encoding))
    with pytest.raises(InvalidElement, match=reason):
        group.scalar_mult(_scalar(3), bytes.fromhex(encoding))
    with pytest.raises(InvalidElement, match=f"element 1: .*{reason}"):
        group.scalar_mult_packed(_scalar(3), group.GENERATOR + bytes.fromhex(encoding))


def test_top_bit_aliases_are_rejected() -> None:
    # libsodium 1.0.18 decodes these as the element without the bit; they are not canonical.
    for encoding in MULTIPLES[1:]:
        alias = bytearray.fromhex(encoding)
        alias[31] |= 0x80
        with pytest.raises(InvalidElement, match="top bit"):
            group.validate_element(bytes(alias))
        with pytest.raises(InvalidElement, match="element 0: non-canonical encoding \\(top bit set\\)"):
            group.scalar_mult_packed(_scalar(5), bytes(alias))
        with pytest.raises(InvalidElement, match="top bit"):
            group.linear_combination([_scalar(2)], [bytes(alias)])
        with pytest.raises(InvalidElement, match="top bit"):
            group.element_add(group.GENERATOR, bytes(alias))


def test_identity_is_rejected_as_an_input() -> None:
    with pytest.raises(InvalidElement, match="identity"):
        group.validate_element(group.IDENTITY)
    with pytest.raises(InvalidElement, match="identity"):
        group.scalar_mult_packed(_scalar(2), group.GENERATOR + group.IDENTITY)
    with pytest.raises(InvalidElement, match="element 0: the identity"):
        group.linear_combination([_scalar(2)], [group.IDENTITY])


@pytest.mark.parametrize(("uniform", "expected"), FROM_UNIFORM)
def test_one_way_map(uniform: str, expected: str) -> None:
    assert group.element_from_uniform(bytes.fromhex(uniform)).hex() == expected


def _expand_reference(msg: bytes, dst: bytes) -> bytes:
    """RFC 9380 section 5.3.1 for SHA-512 and 64 output bytes, written out step by step."""
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(128) + msg + (64).to_bytes(2, "big") + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    return hashlib.sha512(b0 + b"\x01" + dst_prime).digest()


@settings(max_examples=50, deadline=None)
@given(msg=st.binary(max_size=300), dst=st.binary(min_size=1, max_size=255))
def test_expander_and_hashes(msg: bytes, dst: bytes) -> None:
    uniform = _expand_reference(msg, dst)
    assert group.Expander(dst)(msg) == uniform
    assert group.hash_to_group(msg, dst) == group.element_from_uniform(uniform)
    assert (
        int.from_bytes(group.hash_to_scalar(msg, dst), "little")
        == int.from_bytes(uniform, "little") % group.ORDER
    )


def test_oversize_dst_is_hashed_first() -> None:
    long_dst = b"d" * 300
    short = hashlib.sha512(b"H2C-OVERSIZE-DST-" + long_dst).digest()
    assert group.Expander(long_dst)(b"m") == _expand_reference(b"m", short)


def test_scalar_arithmetic_matches_integers() -> None:
    rng = Drbg(b"scalars")
    for _ in range(20):
        a, b = rng.random_scalar(), rng.random_scalar()
        x, y = int.from_bytes(a, "little"), int.from_bytes(b, "little")
        assert group.scalar_mul(a, b) == _scalar(x * y)
        assert group.scalar_add(a, b) == _scalar(x + y)
        assert group.scalar_sub(a, b) == _scalar(x - y)
        assert group.scalar_mul(a, group.scalar_invert(a)) == _scalar(1)
        # (a + b)·G = a·G + b·G and a·(b·G) = (ab)·G
        assert group.base_mult(group.scalar_add(a, b)) == group.element_add(
            group.base_mult(a), group.base_mult(b)
        )
        assert group.scalar_mult(a, group.base_mult(b)) == group.base_mult(group.scalar_mul(a, b))


def test_batch_inversion() -> None:
    rng = Drbg(b"inv")
    scalars = [rng.random_scalar() for _ in range(9)]
    assert group.scalar_invert_many(scalars) == [group.scalar_invert(k) for k in scalars]
    assert group.scalar_invert_many(scalars[:1]) == [group.scalar_invert(scalars[0])]
    assert group.scalar_invert_many([]) == []
    with pytest.raises(InvalidScalar, match="scalar 2: zero scalar"):
        group.scalar_invert_many([*scalars[:2], bytes(32)])


def test_linear_combination_and_batches() -> None:
    rng = Drbg(b"lin")
    scalars = [rng.random_scalar() for _ in range(5)]
    elements = [group.hash_to_group(bytes([i]), b"test") for i in range(5)]
    expected = group.IDENTITY
    for s, e in zip(scalars, elements, strict=True):
        expected = group.element_add(expected, group.scalar_mult(s, e))
    assert group.linear_combination(scalars, elements) == expected
    assert group.linear_combination([bytes(32), *scalars], [group.GENERATOR, *elements]) == expected
    k = scalars[0]
    packed = b"".join(elements)
    assert group.scalar_mult_packed(k, packed) == b"".join(group.scalar_mult(k, e) for e in elements)
    assert group.scalar_mult_each(scalars, packed) == b"".join(
        group.scalar_mult(s, e) for s, e in zip(scalars, elements, strict=True)
    )
    msgs = [bytes([i]) for i in range(5)]
    assert group.hash_to_group_mult(scalars, msgs, b"test") == group.scalar_mult_each(scalars, packed)


def test_scalar_errors_name_the_problem() -> None:
    with pytest.raises(InvalidScalar, match="zero scalar"):
        group.base_mult(bytes(32))
    with pytest.raises(InvalidScalar, match="not below the group order"):
        group.scalar_invert(group.ORDER.to_bytes(32, "little"))
    with pytest.raises(InvalidScalar, match="expected 32 bytes, got 31"):
        group.scalar_mult(bytes(31), group.GENERATOR)
    with pytest.raises(InvalidScalar, match="expected bytes, got int"):
        group.validate_scalar(5)
    with pytest.raises(InvalidScalar, match="scalar 1"):
        group.hash_to_group_mult([_scalar(1), b"short"], [b"a", b"b"], b"dst")
    with pytest.raises(InvalidScalar, match="scalar 0"):
        group.linear_combination([7], [group.GENERATOR])  # type: ignore[list-item]
    assert group.validate_scalar(bytes(32), nonzero=False) == bytes(32)
    assert group.scalar_sub(_scalar(1), _scalar(1)) == bytes(32)


def test_packed_helpers() -> None:
    assert group.split_packed(b"a" * 64) == [b"a" * 32, b"a" * 32]
    assert group.split_packed(b"") == []
    assert group.split_packed(b"b" * 128, 64) == [b"b" * 64] * 2
    with pytest.raises(InvalidElement, match="not a multiple of 32"):
        group.split_packed(b"a" * 65)
    with pytest.raises(InvalidElement, match="expected bytes"):
        group.split_packed("text")
    with pytest.raises(InvalidElement, match="not a multiple of 32"):
        group.scalar_mult_each([_scalar(1)] * 2, b"a" * 65)
    with pytest.raises(InvalidElement, match="1 elements for 2 scalars"):
        group.scalar_mult_each([_scalar(1)] * 2, group.GENERATOR)


GARBAGE = st.one_of(st.binary(max_size=70), st.none(), st.integers(), st.text(max_size=40), st.floats())


@settings(max_examples=300, deadline=None)
@given(value=GARBAGE)
def test_garbage_never_escapes_as_another_exception(value: Any) -> None:
    calls = [
        lambda: group.validate_element(value),
        lambda: group.scalar_mult(_scalar(2), value),
        lambda: group.scalar_mult(value, group.GENERATOR),
        lambda: group.scalar_mult_packed(_scalar(2), value),
        lambda: group.element_add(group.GENERATOR, value),
        lambda: group.linear_combination([_scalar(2)], [value]),
        lambda: group.validate_scalar(value),
        lambda: group.scalar_invert(value),
        lambda: group.split_packed(value),
    ]
    for call in calls:
        with contextlib.suppress(CryptoError):
            call()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=32, max_size=32))
def test_validation_agrees_with_the_problem_finder(data: bytes) -> None:
    problem = group.element_problem(data)
    if problem is None:
        assert group.validate_element(data) == data
        assert group.scalar_mult_packed(_scalar(1), data) == data
    else:
        with pytest.raises(InvalidElement, match=r"non-canonical|decoding fails|identity"):
            group.validate_element(data)


# --- randomness -------------------------------------------------------------------------------------------


def test_drbg_is_deterministic_and_children_are_independent() -> None:
    a, b = Drbg(b"healthpsi" + (7).to_bytes(8, "big")), Drbg(b"healthpsi" + (7).to_bytes(8, "big"))
    assert a.random_bytes(40) == b.random_bytes(40)
    assert a.random_bytes(40) != Drbg(b"other").random_bytes(40)
    assert a.child("pki").random_bytes(16) == b.child("pki").random_bytes(16)
    assert a.child("pki").random_bytes(16) != a.child("node/carrier").random_bytes(16)
    # a child depends only on the parent's seed, not on how much the parent has produced
    fresh = Drbg(b"healthpsi" + (7).to_bytes(8, "big"))
    assert fresh.child("x").random_scalar() == a.child("x").random_scalar()
    # successive outputs differ
    assert a.random_bytes(16) != a.random_bytes(16)


def test_drbg_sampling() -> None:
    rng = Drbg(b"sampling")
    values = [rng.random_int(10) for _ in range(500)]
    assert set(values) == set(range(10))
    assert rng.random_int(1) == 0
    big = 2**200 + 12345
    assert all(0 <= rng.random_int(big) < big for _ in range(50))
    for _ in range(50):
        assert 0 < int.from_bytes(rng.random_scalar(), "little") < group.ORDER
    with pytest.raises(ValueError, match="positive"):
        rng.random_int(0)
    with pytest.raises(TypeError, match="seed"):
        Drbg("text")  # type: ignore[arg-type]


def test_system_rng_has_the_same_interface() -> None:
    rng: Rng = SystemRng()
    assert isinstance(rng, Rng) and isinstance(Drbg(b"x"), Rng)
    assert len(rng.random_bytes(12)) == 12 and rng.random_bytes(16) != rng.random_bytes(16)
    assert 0 < int.from_bytes(rng.child("a").random_scalar(), "little") < group.ORDER
    assert 0 <= rng.random_int(3) < 3
