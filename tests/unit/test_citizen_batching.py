"""Micro-batching on a real event loop: requests arriving together share one call, in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from service.citizen.batching import MicroBatcher

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop in its own thread (a browser test's Playwright may keep a loop
    running in this one)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def test_items_submitted_together_share_one_call_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * i for i in items]

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(square, window=0.01, max_items=64)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert run(main()) == [i * i for i in range(10)]
    assert calls == [list(range(10))]


def test_batches_are_capped_and_run_one_at_a_time() -> None:
    running = threading.Semaphore(1)
    sizes: list[int] = []

    def call(items: list[int]) -> list[int]:
        assert running.acquire(blocking=False), "two batches ran at once"
        sizes.append(len(items))
        running.release()
        return items

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(call, window=0.005, max_items=4)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert run(main()) == list(range(10))
    assert sizes == [4, 4, 2]


def test_a_failing_call_fails_every_item_of_its_batch_only() -> None:
    def call(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("node down")
        return items

    async def main() -> tuple[list[BaseException | int], int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(call, window=0.005, max_items=64)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        return list(first), await batcher.submit(7)

    first, later = run(main())
    assert all(isinstance(r, ValueError) for r in first)
    assert later == 7


@pytest.mark.parametrize("window", [0.0, 0.002])
def test_a_lone_item_gets_its_result(window: float) -> None:
    async def main() -> int:
        batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window=window, max_items=8)
        return await batcher.submit(5)

    assert run(main()) == 5
