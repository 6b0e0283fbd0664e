"""Every reason a shipped policy can give is shown to citizens in words, in Chinese and in English."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.i18n import text

POLICIES = sorted((Path(__file__).resolve().parents[2] / "coordinator" / "policies").glob("*.toml"))


def _reasons(path: Path) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reason"), str):
                found.add(node["reason"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tomllib.loads(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_every_reason_of_a_shipped_policy_has_words(policy: Path) -> None:
    reasons = _reasons(policy)
    assert reasons, f"{policy} names no reason"
    for reason in reasons:
        for lang in ("zh", "en"):
            assert text(f"reason.{reason}", lang) != f"reason.{reason}", f"{reason} has no {lang} text"
