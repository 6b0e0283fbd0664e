"""Executors for partitioned work: local worker processes by default, or a Dask cluster over mutual TLS."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING

from runctx.pki import PkiPaths
from runner import allocator

if TYPE_CHECKING:
    from distributed.security import Security

DASK_LOCAL = "local"
DASK_SCHEME = "tls://"


class DaskAddressError(ValueError):
    """A `--dask` value that is neither "local" nor a tls:// scheduler address; the message says why."""


def default_workers() -> int:
    """Worker processes to use by default: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def check_dask_address(dask: str | None) -> str | None:
    """`--dask`: "local" or a tls:// scheduler address (blinds, tokens, label keys and the code-signing key
    travel to the workers, so never in the clear). Raises DaskAddressError."""
    if dask is None or dask == DASK_LOCAL or (dask.startswith(DASK_SCHEME) and len(dask) > len(DASK_SCHEME)):
        return dask
    raise DaskAddressError(
        f"{dask!r}: give 'local' or a {DASK_SCHEME}HOST:PORT scheduler address (tcp:// and other schemes are "
        "refused: the jobs carry blinds, tokens and signing keys); start the scheduler and workers with the "
        "certificates in RUN/pki/dask"
    )


def dask_security(paths: PkiPaths) -> Security:
    """Mutual TLS for the Dask client, scheduler and workers, from the run's PKI (RUN/pki/dask); encryption
    required on every connection."""
    from distributed.security import Security

    for path in (paths.dask_ca_cert, paths.dask_client_cert, paths.dask_client_key):
        if not path.is_file():
            raise DaskAddressError(f"{path} is missing: `healthpsi keys init` writes the Dask certificates")
    return Security(
        tls_ca_file=str(paths.dask_ca_cert),
        tls_client_cert=str(paths.dask_client_cert),
        tls_client_key=str(paths.dask_client_key),
        tls_scheduler_cert=str(paths.dask_worker_cert),
        tls_scheduler_key=str(paths.dask_worker_key),
        tls_worker_cert=str(paths.dask_worker_cert),
        tls_worker_key=str(paths.dask_worker_key),
        require_encryption=True,
    )


@contextlib.contextmanager
def make_executor(
    workers: int | None = None, dask: str | None = None, pki: PkiPaths | None = None
) -> Iterator[Executor | None]:
    """Yield an Executor: None (in-process) for one worker, a process pool, or a Dask client's executor.

    `dask` is a tls:// scheduler address, or "local" to start a LocalCluster of `workers` worker processes
    on 127.0.0.1; either way every connection is mutual TLS with the certificates of `pki` (the run's).
    """
    workers = workers or default_workers()
    if dask:
        from distributed import Client, LocalCluster

        check_dask_address(dask)
        if pki is None:
            raise DaskAddressError("a Dask executor needs the run's PKI for its TLS certificates")
        security = dask_security(pki)
        cluster = None
        if dask == DASK_LOCAL:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                protocol=DASK_SCHEME, host="127.0.0.1", security=security,
            )
        client = Client(cluster if cluster is not None else dask, security=security)
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
