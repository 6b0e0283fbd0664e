"""Local worker pools are forked whole before they are handed out, never later beside gRPC threads."""

from __future__ import annotations

import multiprocessing

from runner.executors import make_executor


def test_every_worker_is_started_before_the_pool_is_yielded() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    with make_executor(workers=2) as pool:
        started = {p.pid for p in multiprocessing.active_children()} - before
        assert pool is not None
        assert len(started) == 2
    assert not ({p.pid for p in multiprocessing.active_children()} & started)


def test_one_worker_runs_in_process() -> None:
    with make_executor(workers=1) as pool:
        assert pool is None
