"""The ristretto255 prime-order group through libsodium: encoding checks, hashing to the group, scalars.

Elements and scalars travel as 32-byte strings (elements: canonical ristretto255 encodings; scalars:
little-endian integers below the group order). The per-element loops call libsodium through pysodium's
ctypes handle with preallocated buffers, so they add little over the raw C calls.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Sequence

import pysodium

from crypto.errors import InvalidElement, InvalidScalar

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
UNIFORM_BYTES = 64
ORDER = 2**252 + 27742317777372353535851937790883648493
"""The prime order of the ristretto255 group."""
IDENTITY = bytes(ELEMENT_BYTES)
"""The identity element's (only) encoding; never accepted as an input."""

_FIELD_PRIME = 2**255 - 19
_SHA512_BLOCK = 128
_TOP_BIT = 0x80

_lib = pysodium.sodium
if _lib.sodium_init() < 0:  # pragma: no cover - libsodium cannot initialise only on a broken system
    raise RuntimeError("libsodium failed to initialise")
_from_hash = _lib.crypto_core_ristretto255_from_hash
_is_valid_point = _lib.crypto_core_ristretto255_is_valid_point
_point_add = _lib.crypto_core_ristretto255_add
_point_sub = _lib.crypto_core_ristretto255_sub
_scalarmult = _lib.crypto_scalarmult_ristretto255
_scalarmult_base = _lib.crypto_scalarmult_ristretto255_base
_scalar_invert = _lib.crypto_core_ristretto255_scalar_invert
_scalar_reduce = _lib.crypto_core_ristretto255_scalar_reduce
_scalar_mul = _lib.crypto_core_ristretto255_scalar_mul
_scalar_add = _lib.crypto_core_ristretto255_scalar_add
_scalar_sub = _lib.crypto_core_ristretto255_scalar_sub
_sha512 = hashlib.sha512
_Z_PAD = _sha512(bytes(_SHA512_BLOCK))  # hash state after the all-zero first block; copied per message


def _describe(value: object) -> str:
    """Name what a non-bytes argument is, for an error message."""
    return type(value).__name__


def _as_bytes(value: object, what: str, error: type[InvalidElement] | type[InvalidScalar]) -> bytes:
    """Return `value` as bytes of the right length, or raise `error` naming the problem."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise error(f"{what}: expected bytes, got {_describe(value)}")
    data = bytes(value)
    if len(data) != 32:
        raise error(f"{what}: expected 32 bytes, got {len(data)}")
    return data


def element_problem(data: bytes) -> str | None:
    """Say why a 32-byte string is not an acceptable element (non-canonical, invalid, identity), or None."""
    if data == IDENTITY:
        return "the identity element"
    if data[31] & _TOP_BIT:
        return "non-canonical encoding (top bit set)"
    encoded = int.from_bytes(data, "little")
    if encoded >= _FIELD_PRIME:
        return "non-canonical encoding (field element not reduced modulo 2^255-19)"
    if encoded & 1:
        return "non-canonical encoding (negative field element)"
    if _is_valid_point(data) != 1:
        return "not a valid ristretto255 encoding (decoding fails)"
    return None


def _first_top_bit(packed: bytes) -> int:
    """Index of the first element of `packed` with the top bit set, or -1.

    libsodium 1.0.18 decodes such encodings (aliases of reduced ones) instead of rejecting them, so every
    path that hands encodings to libsodium checks the bit first.
    """
    tops = packed[ELEMENT_BYTES - 1 :: ELEMENT_BYTES]
    if not tops or max(tops) < _TOP_BIT:
        return -1
    return next(i for i, top in enumerate(tops) if top >= _TOP_BIT)


def validate_element(data: object, what: str = "element") -> bytes:
    """Return `data` as a canonical, non-identity ristretto255 encoding, or raise InvalidElement."""
    element = _as_bytes(data, what, InvalidElement)
    if _is_valid_point(element) == 1 and element != IDENTITY and element[31] < _TOP_BIT:
        return element
    raise InvalidElement(f"{what}: {element_problem(element)}")


def validate_scalar(data: object, what: str = "scalar", *, nonzero: bool = True) -> bytes:
    """`data` as a canonical scalar (below the order; nonzero unless allowed), or raise InvalidScalar."""
    scalar = _as_bytes(data, what, InvalidScalar)
    value = int.from_bytes(scalar, "little")
    if value >= ORDER:
        raise InvalidScalar(f"{what}: non-canonical scalar (not below the group order)")
    if nonzero and value == 0:
        raise InvalidScalar(f"{what}: zero scalar")
    return scalar


def _check_scalar_list(scalars: Sequence[bytes]) -> None:
    """Make sure every scalar is 32 bytes before libsodium reads it (full validation is the caller's)."""
    if not all(type(k) is bytes and len(k) == SCALAR_BYTES for k in scalars):
        for i, k in enumerate(scalars):
            validate_scalar(k, f"scalar {i}", nonzero=False)


def as_packed(data: object, size: int = ELEMENT_BYTES, what: str = "packed elements") -> bytes:
    """Return n·size packed bytes as bytes; raise InvalidElement for another type or a ragged length."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidElement(f"{what}: expected bytes, got {_describe(data)}")
    data = bytes(data)
    if len(data) % size:
        raise InvalidElement(f"{what}: length {len(data)} is not a multiple of {size}")
    return data


def split_packed(data: object, size: int = ELEMENT_BYTES) -> list[bytes]:
    """Split n·size packed bytes into n strings of `size` bytes; raise InvalidElement on a ragged length."""
    data = as_packed(data, size)
    return [data[i : i + size] for i in range(0, len(data), size)]


def _dst_prime(dst: bytes) -> bytes:
    """DST_prime of RFC 9380 section 5.3.3 (oversize DSTs hashed first)."""
    if len(dst) > 255:
        dst = _sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    return dst + bytes([len(dst)])


class Expander:
    """expand_message_xmd(SHA-512) to 64 bytes under one fixed DST, suffixes precomputed for hot loops."""

    __slots__ = ("_head_suffix", "_tail_suffix")

    def __init__(self, dst: bytes) -> None:
        dst_prime = _dst_prime(dst)
        self._head_suffix = UNIFORM_BYTES.to_bytes(2, "big") + b"\x00" + dst_prime
        self._tail_suffix = b"\x01" + dst_prime

    def __call__(self, msg: bytes) -> bytes:
        """Return the 64 uniform bytes for `msg`."""
        state = _Z_PAD.copy()
        state.update(msg + self._head_suffix)
        return _sha512(state.digest() + self._tail_suffix).digest()


def _uniform_to_scalar(uniform: bytes) -> bytes:
    """Reduce 64 little-endian bytes modulo the group order (libsodium, constant time: keys come this way)."""
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    _scalar_reduce(out, uniform)
    return out.raw


def scalar_from_uniform(uniform: bytes) -> bytes:
    """Reduce 64 uniform bytes (little-endian) to a scalar, as RFC 9497's ristretto255 HashToScalar does."""
    if type(uniform) is not bytes or len(uniform) != UNIFORM_BYTES:
        raise InvalidScalar(f"uniform bytes: expected {UNIFORM_BYTES}, got {len(uniform)}")
    return _uniform_to_scalar(uniform)


def hash_to_scalar(msg: bytes, dst: bytes) -> bytes:
    """RFC 9497 HashToScalar: expand_message_xmd(SHA-512) to 64 bytes, read little-endian, mod the order."""
    return _uniform_to_scalar(Expander(dst)(msg))


def element_from_uniform(uniform: bytes) -> bytes:
    """The ristretto255 one-way map (libsodium `from_hash`) of 64 uniform bytes."""
    if len(uniform) != UNIFORM_BYTES:
        raise InvalidElement(f"uniform bytes: expected {UNIFORM_BYTES}, got {len(uniform)}")
    out = ctypes.create_string_buffer(ELEMENT_BYTES)
    _from_hash(out, bytes(uniform))
    return out.raw


def hash_to_group(msg: bytes, dst: bytes) -> bytes:
    """RFC 9380 hash_to_ristretto255: expand_message_xmd(SHA-512) to 64 bytes, then the one-way map."""
    return element_from_uniform(Expander(dst)(msg))


def scalar_mult(k: bytes, element: bytes) -> bytes:
    """k·E for a nonzero canonical scalar and a valid non-identity element."""
    k = validate_scalar(k)
    element = validate_element(element)
    out = ctypes.create_string_buffer(ELEMENT_BYTES)
    if _scalarmult(out, k, element) != 0:  # pragma: no cover - cannot happen for a valid k and E
        raise InvalidElement("scalar multiplication gave the identity")
    return out.raw


def base_mult(k: bytes) -> bytes:
    """k·G for the group generator G and a nonzero canonical scalar k."""
    k = validate_scalar(k)
    out = ctypes.create_string_buffer(ELEMENT_BYTES)
    if _scalarmult_base(out, k) != 0:  # pragma: no cover - cannot happen for a nonzero canonical k
        raise InvalidScalar("base multiplication gave the identity")
    return out.raw


GENERATOR = base_mult((1).to_bytes(SCALAR_BYTES, "little"))
"""The ristretto255 generator's encoding."""


def scalar_mult_packed(k: bytes, packed: bytes, first_index: int = 0) -> bytes:
    """k·E for every element of packed n·32 bytes; raise InvalidElement naming the first bad one.

    `first_index` numbers the elements in error messages when `packed` is one chunk of a larger batch.
    """
    k = validate_scalar(k)
    packed = as_packed(packed)
    n = len(packed) // ELEMENT_BYTES
    bad = _first_top_bit(packed)
    if bad >= 0:
        raise InvalidElement(f"element {first_index + bad}: non-canonical encoding (top bit set)")
    out = ctypes.create_string_buffer(n * ELEMENT_BYTES)
    mult, at_offset = _scalarmult, ctypes.byref
    # libsodium fails the call for an invalid or non-canonical encoding and for an identity result,
    # which (k being nonzero, the group prime) happens exactly for the identity input.
    for i in range(n):
        at = i * ELEMENT_BYTES
        if mult(at_offset(out, at), k, packed[at : at + ELEMENT_BYTES]):
            element = packed[at : at + ELEMENT_BYTES]
            raise InvalidElement(f"element {first_index + i}: {element_problem(element)}")
    return out.raw


def scalar_mult_each(scalars: Sequence[bytes], packed: bytes) -> bytes:
    """s_i·E_i for per-element scalars and packed n·32 elements; InvalidElement names the first bad one.

    The scalars must be nonzero and canonical (checked here only for type and length).
    """
    packed = as_packed(packed)
    n = len(packed) // ELEMENT_BYTES
    if n != len(scalars):
        raise InvalidElement(f"packed elements: {n} elements for {len(scalars)} scalars")
    _check_scalar_list(scalars)
    bad = _first_top_bit(packed)
    if bad >= 0:
        raise InvalidElement(f"element {bad}: non-canonical encoding (top bit set)")
    out = ctypes.create_string_buffer(n * ELEMENT_BYTES)
    mult, at_offset = _scalarmult, ctypes.byref
    for i, k in enumerate(scalars):
        at = i * ELEMENT_BYTES
        if mult(at_offset(out, at), k, packed[at : at + ELEMENT_BYTES]):
            raise InvalidElement(f"element {i}: {element_problem(packed[at : at + ELEMENT_BYTES])}")
    return out.raw


def hash_to_group_mult(scalars: Sequence[bytes], msgs: Sequence[bytes], dst: bytes) -> bytes:
    """s_i·HashToGroup(m_i) for every message, packed n·32 bytes, for nonzero canonical scalars s_i."""
    if len(scalars) != len(msgs):
        raise ValueError(f"hash_to_group_mult: {len(scalars)} scalars for {len(msgs)} messages")
    _check_scalar_list(scalars)
    expand = Expander(dst)
    point = ctypes.create_string_buffer(ELEMENT_BYTES)
    out = ctypes.create_string_buffer(len(msgs) * ELEMENT_BYTES)
    from_hash, mult, at_offset = _from_hash, _scalarmult, ctypes.byref
    for i, (k, msg) in enumerate(zip(scalars, msgs, strict=True)):
        from_hash(point, expand(msg))
        # libsodium fails only for an identity result: a preimage of the identity under the hash.
        if mult(at_offset(out, i * ELEMENT_BYTES), k, point):  # pragma: no cover
            raise InvalidElement(f"input {i} hashes to the identity element")
    return out.raw


def _operand(data: object, what: str) -> bytes:
    """A canonical encoding, the identity allowed (for sums), else InvalidElement."""
    element = _as_bytes(data, what, InvalidElement)
    if element == IDENTITY:
        return element
    return validate_element(element, what)


def element_add(a: bytes, b: bytes) -> bytes:
    """A + B for valid elements (the identity allowed, as an accumulator)."""
    out = ctypes.create_string_buffer(ELEMENT_BYTES)
    _point_add(out, _operand(a, "element A"), _operand(b, "element B"))
    return out.raw


def element_sub(a: bytes, b: bytes) -> bytes:
    """A - B for valid elements (the identity allowed)."""
    out = ctypes.create_string_buffer(ELEMENT_BYTES)
    _point_sub(out, _operand(a, "element A"), _operand(b, "element B"))
    return out.raw


def _usable(element: object) -> bool:
    """Whether libsodium may be handed `element`: 32 bytes with the top bit clear (it checks the rest)."""
    return type(element) is bytes and len(element) == ELEMENT_BYTES and element[31] < _TOP_BIT


def linear_combination(scalars: Sequence[bytes], elements: Sequence[bytes]) -> bytes:
    """Σ s_i·E_i for canonical scalars (zero ones add nothing) and valid non-identity elements.

    The sum itself may be the identity (returned as its all-zero encoding).
    """
    if len(scalars) != len(elements):
        raise ValueError(f"linear combination: {len(scalars)} scalars for {len(elements)} elements")
    _check_scalar_list(scalars)
    acc = ctypes.create_string_buffer(ELEMENT_BYTES)  # all zeros: the identity
    term = ctypes.create_string_buffer(ELEMENT_BYTES)
    mult, add = _scalarmult, _point_add
    for i, (s, e) in enumerate(zip(scalars, elements, strict=True)):
        if not _usable(e) or mult(term, s, e) or add(acc, acc, term):
            element = validate_element(e, f"element {i}")
            if s == bytes(SCALAR_BYTES):
                continue
            raise InvalidElement(f"element {i}: {element_problem(element)}")  # pragma: no cover
    return acc.raw


def scalar_invert(k: bytes) -> bytes:
    """1/k modulo the group order, for a nonzero canonical scalar."""
    k = validate_scalar(k)
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    _scalar_invert(out, k)
    return out.raw


def scalar_invert_many(scalars: Sequence[bytes]) -> list[bytes]:
    """1/k for each nonzero canonical scalar, by one inversion and 3(n-1) multiplications (Montgomery's
    trick), all in libsodium's constant-time scalar arithmetic."""
    scalars = [validate_scalar(k, f"scalar {i}") for i, k in enumerate(scalars)]
    if not scalars:
        return []
    prefix = [scalars[0]]
    acc = ctypes.create_string_buffer(SCALAR_BYTES)
    for k in scalars[1:]:
        _scalar_mul(acc, prefix[-1], k)
        prefix.append(acc.raw)
    _scalar_invert(acc, prefix[-1])  # acc = 1/(k_0···k_{n-1})
    out = [b""] * len(scalars)
    term = ctypes.create_string_buffer(SCALAR_BYTES)
    for i in range(len(scalars) - 1, 0, -1):
        _scalar_mul(term, acc, prefix[i - 1])
        out[i] = term.raw
        _scalar_mul(acc, acc, scalars[i])
    out[0] = acc.raw
    return out


def _scalar_op(op: Callable[..., object], a: bytes, b: bytes) -> bytes:
    """A libsodium binary scalar operation on two canonical scalars (zero allowed)."""
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    op(out, validate_scalar(a, "scalar a", nonzero=False), validate_scalar(b, "scalar b", nonzero=False))
    return out.raw


def scalar_mul(a: bytes, b: bytes) -> bytes:
    """a·b modulo the group order (constant time)."""
    return _scalar_op(_scalar_mul, a, b)


def scalar_add(a: bytes, b: bytes) -> bytes:
    """a + b modulo the group order (constant time)."""
    return _scalar_op(_scalar_add, a, b)


def scalar_sub(a: bytes, b: bytes) -> bytes:
    """a - b modulo the group order (constant time)."""
    return _scalar_op(_scalar_sub, a, b)
