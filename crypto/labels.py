"""Index tags and sealed labels derived from an OPRF output.

From a PRF output y: tag = HKDF-SHA256(y, info="healthpsi tag")[:16] and label key =
HKDF-SHA256(y, info="healthpsi label") (32 bytes), both without salt. A label is AES-256-GCM under the
label key (12 zero bytes of nonce: each key seals exactly one label, once; no associated data) over the
sorted subject bodies as 8-byte big-endian integers, padded with all-ones entries to a power of two.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import LabelError

TAG_BYTES = 16
KEY_BYTES = 32
ENTRY_BYTES = 8
GCM_TAG_BYTES = 16
PADDING = b"\xff" * ENTRY_BYTES
"""A padding entry; no subject body can take this value."""
MAX_BODY = 2**64 - 2
"""The largest body a label can hold (all-ones is padding)."""

_NONCE = bytes(12)
_TAG_INFO = b"healthpsi tag\x01"
_LABEL_INFO = b"healthpsi label\x01"
_BLOCK = 64  # SHA-256's block: HMAC pads its key to this
_IPAD, _OPAD = 0x36, 0x5C
_sha256 = hashlib.sha256
# HKDF-Extract has no salt, i.e. an HMAC key of 32 zero bytes: its padded-key hash states are fixed, and
# are copied per output instead of being recomputed.
_EXTRACT_INNER = _sha256(bytes([_IPAD]) * _BLOCK)
_EXTRACT_OUTER = _sha256(bytes([_OPAD]) * _BLOCK)
_IPAD_KEY = int.from_bytes(bytes([_IPAD]) * 32, "big")
_OPAD_KEY = int.from_bytes(bytes([_OPAD]) * 32, "big")
_IPAD_TAIL = bytes([_IPAD]) * (_BLOCK - 32)
_OPAD_TAIL = bytes([_OPAD]) * (_BLOCK - 32)


def _extract(y: bytes) -> tuple[Any, Any]:
    """HKDF-Extract(salt=none, y): the inner and outer hash states of HMAC keyed by the PRK (RFC 2104)."""
    if not isinstance(y, bytes | bytearray | memoryview):
        raise LabelError(f"PRF output: expected bytes, got {type(y).__name__}")
    inner = _EXTRACT_INNER.copy()
    inner.update(y)
    outer = _EXTRACT_OUTER.copy()
    outer.update(inner.digest())
    prk = int.from_bytes(outer.digest(), "big")
    return (
        _sha256((prk ^ _IPAD_KEY).to_bytes(32, "big") + _IPAD_TAIL),
        _sha256((prk ^ _OPAD_KEY).to_bytes(32, "big") + _OPAD_TAIL),
    )


def _expand(keyed: tuple[Any, Any], info: bytes) -> bytes:
    """The first HKDF-Expand block, HMAC(PRK, info || 0x01), from the PRK's HMAC states."""
    inner = keyed[0].copy()
    inner.update(info)
    outer = keyed[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def derive_tag_key(y: bytes) -> tuple[bytes, bytes]:
    """(16-byte index tag, 32-byte label key) from a PRF output, by HKDF-SHA256 with the design's infos."""
    keyed = _extract(y)
    # HKDF-Expand: both outputs fit in the first block T(1) = HMAC(PRK, info || 0x01).
    return _expand(keyed, _TAG_INFO)[:TAG_BYTES], _expand(keyed, _LABEL_INFO)


def derive_tag(y: bytes) -> bytes:
    """The 16-byte index tag alone (what a lookup needs before any label is opened)."""
    return _expand(_extract(y), _TAG_INFO)[:TAG_BYTES]


def padded_entries(count: int) -> int:
    """The number of entries a label of `count` subjects holds: the next power of two (at least 1)."""
    return 1 << max(count - 1, 0).bit_length()


def _check_key(key: object) -> bytes:
    """Return a 32-byte label key, or raise LabelError."""
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_BYTES:
        raise LabelError(f"label key: expected {KEY_BYTES} bytes")
    return bytes(key)


def seal(key: bytes, bodies: Sequence[int]) -> bytes:
    """Seal the distinct subject bodies (sorted, padded to a power of two entries) under a label key."""
    key = _check_key(key)
    try:
        distinct = sorted({operator.index(body) for body in bodies})
    except TypeError as exc:
        raise LabelError(f"label: subject bodies must be integers ({exc})") from None
    if distinct and (distinct[0] < 0 or distinct[-1] > MAX_BODY):
        raise LabelError(f"label: subject bodies must lie in [0, {MAX_BODY}]")
    plain = b"".join(body.to_bytes(ENTRY_BYTES, "big") for body in distinct)
    plain += PADDING * (padded_entries(len(distinct)) - len(distinct))
    return AESGCM(key).encrypt(_NONCE, plain, None)


def seal_packed(key: bytes, packed: bytes) -> bytes:
    """`seal` for bodies already packed as the label's entries: strictly ascending 8-byte big-endian
    integers in [0, MAX_BODY] (the caller's promise; only the length is checked). Pads and seals, giving
    the same bytes as `seal` over the same bodies — without a Python loop over them."""
    key = _check_key(key)
    if not isinstance(packed, bytes | bytearray | memoryview) or len(packed) % ENTRY_BYTES:
        raise LabelError(f"packed label entries: expected a multiple of {ENTRY_BYTES} bytes")
    count = len(packed) // ENTRY_BYTES
    return AESGCM(key).encrypt(_NONCE, bytes(packed) + PADDING * (padded_entries(count) - count), None)


def open_label(key: bytes, sealed: bytes) -> list[int]:
    """Open a sealed label: the sorted subject bodies, padding stripped; LabelError if it does not open or is
    malformed."""
    key = _check_key(key)
    if not isinstance(sealed, bytes | bytearray | memoryview):
        raise LabelError(f"sealed label: expected bytes, got {type(sealed).__name__}")
    if len(sealed) < GCM_TAG_BYTES + ENTRY_BYTES:
        raise LabelError(f"sealed label: {len(sealed)} bytes, too short for one entry and the GCM tag")
    try:
        plain = AESGCM(key).decrypt(_NONCE, bytes(sealed), None)
    except InvalidTag:
        raise LabelError("sealed label does not open under this key (wrong key or tampered label)") from None
    entries = len(plain) // ENTRY_BYTES
    if len(plain) % ENTRY_BYTES or entries != padded_entries(entries):
        raise LabelError(
            f"label: {len(plain)} bytes is not a power-of-two number of {ENTRY_BYTES}-byte entries"
        )
    raw = [plain[i : i + ENTRY_BYTES] for i in range(0, len(plain), ENTRY_BYTES)]
    count = next((i for i, entry in enumerate(raw) if entry == PADDING), entries)
    if any(entry != PADDING for entry in raw[count:]):
        raise LabelError("label: a subject entry follows padding")
    bodies = [int.from_bytes(entry, "big") for entry in raw[:count]]
    if any(a >= b for a, b in itertools.pairwise(bodies)):
        raise LabelError("label: subject entries are not strictly ascending")
    if padded_entries(count) != entries:
        raise LabelError(f"label: {entries} entries for {count} subjects (expected {padded_entries(count)})")
    return bodies
