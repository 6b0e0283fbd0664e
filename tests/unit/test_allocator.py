"""The heap settings apply on this (glibc) system and are harmless to apply twice."""

from __future__ import annotations

import platform

import pytest

from healthpsi import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_applies_on_glibc() -> None:
    assert allocator.tune() is True
    assert allocator.tune() is True
