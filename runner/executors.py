"""Executors for partitioned work: local worker processes by default, or a Dask cluster."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

from runner import allocator


def default_workers() -> int:
    """Worker processes to use by default: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextlib.contextmanager
def make_executor(workers: int | None = None, dask: str | None = None) -> Iterator[Executor | None]:
    """Yield an Executor: None (in-process) for one worker, a process pool, or a Dask client's executor.

    `dask` is a scheduler address, or "local" to start a LocalCluster with `workers` workers.
    """
    workers = workers or default_workers()
    if dask:
        from distributed import Client, LocalCluster

        cluster = None
        if dask == "local":
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(cluster if cluster is not None else dask)
        client.run(allocator.tune)  # Dask workers are not forked from this process
        try:
            # pure=False: every call runs (Dask would otherwise merge calls with equal arguments by key,
            # and hash every argument to make that key)
            yield client.get_executor(pure=False)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    elif workers <= 1:
        yield None
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            # fork every worker now, while this process has no gRPC threads: forking later, with a call in
            # flight on another thread, is unsafe (gRPC skips its fork handlers and says so on stderr)
            pool.submit(abs, 0).result()
            yield pool
