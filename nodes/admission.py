"""Admission of calls to a node's handler threads: at most `limit` calls running or waiting for a thread.

A call over the limit is answered UNAVAILABLE at once — the status of a node that is busy now and may answer
later, which the coordinator retries with backoff — so RESOURCE_EXHAUSTED keeps one meaning: a partition's
query budget is spent, which no retry cures. (gRPC's own `maximum_concurrent_rpcs` answers
RESOURCE_EXHAUSTED, hence this gate.) The gate is a server interceptor over an executor that counts the
calls it runs: gRPC looks a call's handler up (the interceptor) and hands it to the executor in the same
thread, one call after the other, so the count the interceptor reads is exact. Refusals run on a thread of
their own, never queued behind the calls that filled the limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn

import grpc

log = logging.getLogger("healthpsi.node")


class CountingExecutor(ThreadPoolExecutor):
    """The handler threads, counting the calls submitted and not yet finished (running or queued); a call
    marked refused by the gate runs on a separate single thread, uncounted."""

    def __init__(self, threads: int) -> None:
        super().__init__(max_workers=threads, thread_name_prefix="rpc")
        self._refusals = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpc-refused")
        self._lock = threading.Lock()
        self._local = threading.local()
        self.in_flight = 0

    def refuse_next(self) -> None:
        """Send the next call submitted from this thread to the refusal thread."""
        self._local.refuse = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run one call's handler: counted on the handler threads, or on the refusal thread when marked."""
        if getattr(self._local, "refuse", False):
            self._local.refuse = False
            return self._refusals.submit(fn, *args, **kwargs)
        with self._lock:
            self.in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any] | None) -> None:
        """One counted call finished."""
        with self._lock:
            self.in_flight -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop both thread pools."""
        self._refusals.shutdown(wait, cancel_futures=cancel_futures)
        super().shutdown(wait, cancel_futures=cancel_futures)


def _refuse(limit: int) -> Callable[[Any, grpc.ServicerContext], NoReturn]:
    """A handler that answers UNAVAILABLE without reading the request."""

    def refuse(request: Any, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAVAILABLE, f"the node is serving its limit of {limit} calls; retry")
        raise AssertionError("context.abort raises")

    return refuse


class CallGate(grpc.ServerInterceptor):
    """Lets a call through while fewer than `limit` are running or queued on `executor`, else refuses it
    UNAVAILABLE (logged on the operator's log: under load the audit log is not written per refusal)."""

    def __init__(self, limit: int, executor: CountingExecutor) -> None:
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.executor = executor
        self.refused = 0

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """The call's own handler, or one that refuses it when the node is at its limit."""
        handler = continuation(handler_call_details)
        if handler is None or self.executor.in_flight < self.limit:
            return handler
        self.refused += 1
        log.warning("refused %s: %d calls in progress (limit %d), answered UNAVAILABLE (%d refused so far)",
                    handler_call_details.method, self.executor.in_flight, self.limit, self.refused)
        self.executor.refuse_next()
        refuse = _refuse(self.limit)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)
