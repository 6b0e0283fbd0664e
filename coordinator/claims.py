"""What a health code says about its holder: the claim set the issuer signs, with the holder's name and
subject id masked (policy: enough to match a code to a person at a checkpoint, not to identify them)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from crypto.codes import CLAIM_EXP, CLAIM_HCERT, CLAIM_IAT, CLAIM_ISS, CODE_VALIDITY, COLOURS, HCERT_ENTRY
from crypto.pki import utc


def mask_name(name: str) -> str:
    """Mask a name for a code: first and last character kept ("张小三" -> "张*三", "张三" -> "张*")."""
    chars = list(name.strip())
    if not chars:
        raise ValueError("mask_name: empty name")
    if len(chars) == 1:
        return "*"
    if len(chars) == 2:
        return chars[0] + "*"
    return chars[0] + "*" * (len(chars) - 2) + chars[-1]


def mask_id(subject_id: str) -> str:
    """Mask a subject id: first 3 and last 4 characters kept ("410***********1234")."""
    if len(subject_id) < 8:
        raise ValueError(f"mask_id: id of {len(subject_id)} characters is too short to mask")
    return subject_id[:3] + "*" * (len(subject_id) - 7) + subject_id[-4:]


def health_claims(
    *,
    code_id: str,
    issuer: str,
    colour: str,
    policy_version: str,
    name: str,
    subject_id: str,
    issued_at: datetime,
    validity: timedelta = CODE_VALIDITY,
    colour_until: date | None = None,
) -> dict[int, Any]:
    """The claim set of a health code (name and id masked here); naive `issued_at` is taken as UTC."""
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r}: expected one of {COLOURS}")
    if not code_id:
        raise ValueError("code_id must be non-empty")
    iat = int(utc(issued_at).timestamp())
    hcp: dict[str, str] = {
        "id": code_id,
        "c": colour,
        "pv": policy_version,
        "n": mask_name(name),
        "sid": mask_id(subject_id),
    }
    if colour_until is not None:
        hcp["vd"] = colour_until.isoformat()
    return {
        CLAIM_ISS: issuer,
        CLAIM_IAT: iat,
        CLAIM_EXP: iat + int(validity.total_seconds()),
        CLAIM_HCERT: {HCERT_ENTRY: hcp},
    }
