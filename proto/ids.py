"""Subject ids: 18-character national-ID-shaped strings (17 digits and a MOD 11-2 check character)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = "10X98765432"
_CHECK_ARRAY = np.array(list(CHECK_CHARS))
_CHECK_BYTES = np.frombuffer(CHECK_CHARS.encode(), dtype=np.uint8)
_POWERS = 10 ** np.arange(16, -1, -1, dtype=np.int64)
_PARSE_ROWS = 1 << 16


def check_char(body: str) -> str:
    """The MOD 11-2 check character of a 17-digit body."""
    if len(body) != 17 or not body.isdigit():
        raise ValueError(f"subject id body must be 17 digits, got {body!r}")
    total = sum(int(d) * int(w) for d, w in zip(body, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def is_valid(subject_id: str) -> bool:
    """True when subject_id is 17 digits plus the right check character."""
    return (
        isinstance(subject_id, str)
        and len(subject_id) == 18
        and subject_id[:17].isdigit()
        and subject_id[:17].isascii()
        and check_char(subject_id[:17]) == subject_id[17]
    )


def check_chars(bodies: np.ndarray) -> np.ndarray:
    """Vectorised check characters for an int64 array of 17-digit bodies."""
    digits = np.empty((len(bodies), 17), dtype=np.int64)
    rest = np.asarray(bodies, dtype=np.int64).copy()
    for i in range(16, -1, -1):
        digits[:, i] = rest % 10
        rest //= 10
    return _CHECK_ARRAY[(digits @ WEIGHTS) % 11]


def from_bodies(bodies: np.ndarray) -> np.ndarray:
    """Vectorised subject ids (object array of str) from int64 17-digit bodies."""
    bodies = np.asarray(bodies, dtype=np.int64)
    text = np.char.zfill(bodies.astype(str), 17)
    return np.char.add(text, check_chars(bodies)).astype(object)


def parse(subject_ids: pd.Series | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `is_valid` and `to_int`: (valid mask, int64 body, 0 where invalid) of each subject id.

    A Series is read as text (`astype("string")`, so non-strings are judged by their text; nulls are invalid).
    """
    if isinstance(subject_ids, pd.Series):
        subject_ids = pa.array(subject_ids.astype("string[pyarrow]"))
    if isinstance(subject_ids, pa.ChunkedArray):
        subject_ids = subject_ids.combine_chunks()
    text = subject_ids.cast(pa.large_binary())
    n = len(text)
    valid, bodies = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    shaped = pc.fill_null(pc.equal(pc.binary_length(text), 18), False).to_numpy(zero_copy_only=False)
    if not shaped.all():
        text = text.filter(pa.array(shaped))
    if not len(text):
        return valid, bodies
    start = int(np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset])
    raw = np.frombuffer(text.buffers()[2], dtype=np.uint8)[start : start + 18 * len(text)].reshape(-1, 18)
    ok, body = np.empty(len(raw), dtype=bool), np.empty(len(raw), dtype=np.int64)
    for lo in range(0, len(raw), _PARSE_ROWS):  # in slices that stay in cache
        digits = raw[lo : lo + _PARSE_ROWS, :17] - np.uint8(ord("0"))  # wraps around below "0"
        check = _CHECK_BYTES[(digits @ WEIGHTS) % 11]
        ok[lo : lo + _PARSE_ROWS] = (digits <= 9).all(axis=1) & (check == raw[lo : lo + _PARSE_ROWS, 17])
        body[lo : lo + _PARSE_ROWS] = digits @ _POWERS
    valid[shaped] = ok
    bodies[shaped] = np.where(ok, body, 0)
    return valid, bodies


def valid_mask(subject_ids: pd.Series) -> np.ndarray:
    """Vectorised is_valid over a Series of subject ids (non-strings are judged by their text; nulls are
    invalid)."""
    return parse(subject_ids)[0]


def to_int(subject_id: str) -> int:
    """The 17-digit body as an unsigned integer (how a subject id travels in a label)."""
    if not is_valid(subject_id):
        raise ValueError(f"not a valid subject id: {subject_id!r}")
    return int(subject_id[:17])


def from_int(body: int) -> str:
    """The subject id for a 17-digit body, check character recomputed."""
    text = f"{body:017d}"
    if len(text) != 17:
        raise ValueError(f"subject id body out of range: {body}")
    return text + check_char(text)
