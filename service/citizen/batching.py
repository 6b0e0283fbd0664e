"""Micro-batching: requests that arrive within a few milliseconds of each other share one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Collects items for `window` seconds (or until `max_items`), then runs `call` on them in a thread;
    one call at a time, items that arrive meanwhile wait for the next one. `call` returns one result per
    item, in order; an exception fails every item of its batch."""

    def __init__(self, call: Callable[[list[T]], Sequence[R]], window: float, max_items: int) -> None:
        self.call = call
        self.window = window
        self.max_items = max_items
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        """Calls made so far."""

    async def submit(self, item: T) -> R:
        """The result of `item` once its batch has been called."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            if len(self._pending) < self.max_items:
                await asyncio.sleep(self.window)
            batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
            self.batches += 1
            try:
                results = await asyncio.to_thread(self.call, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
