"""Subject ids: 18-character national-ID-shaped strings (17 digits and a MOD 11-2 check character)."""

from __future__ import annotations

import numpy as np
import pandas as pd

WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = "10X98765432"
_CHECK_ARRAY = np.array(list(CHECK_CHARS))


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


def valid_mask(subject_ids: pd.Series) -> np.ndarray:
    """Vectorised is_valid over a Series of subject ids (non-strings are invalid)."""
    s = subject_ids.astype("string")
    shape_ok = s.str.fullmatch(r"[0-9]{17}[0-9X]").fillna(False).to_numpy(dtype=bool)
    out = np.zeros(len(s), dtype=bool)
    if shape_ok.any():
        good = s[shape_ok]
        bodies = good.str.slice(0, 17).astype("int64").to_numpy()
        out[shape_ok] = check_chars(bodies) == good.str.slice(17, 18).to_numpy(dtype=object)
    return out


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
