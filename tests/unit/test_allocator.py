"""The heap settings apply on this (glibc) system and are harmless to apply twice."""

from __future__ import annotations

import platform

import psutil
import pytest

from runner import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_applies_on_glibc() -> None:
    assert allocator.tune() is True
    assert allocator.tune() is True


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_gives_freed_heap_back() -> None:
    assert allocator.tune() is True  # freed buffers now stay in the heap
    me = psutil.Process()
    buffers = [bytearray(b"\x01") * (50 << 20) for _ in range(8)]  # 400 MiB, written page by page
    held = me.memory_info().rss
    del buffers
    kept = me.memory_info().rss
    assert allocator.release() is True
    released = me.memory_info().rss
    assert kept > held - (100 << 20)  # tuned: freeing alone gave little back
    assert released < kept - (300 << 20)
