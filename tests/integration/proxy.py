"""A TCP relay on loopback between the coordinator and a node, for fault tests: it counts the bytes each way,
can slow the node's replies, can run a hook before relaying the byte that passes a mark (to kill the node
mid-transfer), and can be pointed at a restarted node. TLS passes through it untouched."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

PIECE = 16384


class Proxy:
    """Listens on 127.0.0.1:<port> and relays each connection to `target` (host:port, read per connection)."""

    def __init__(self, target: str, *, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        """Seconds to wait before relaying each piece (up to 16 KiB) the node sends."""
        self.sent_by_node = 0
        self.mark: int | None = None
        self.on_mark: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        """127.0.0.1:<port> to give the coordinator."""
        return f"127.0.0.1:{self.port}"

    def trip_at(self, mark: int, hook: Callable[[], None]) -> None:
        """Run `hook` once, before relaying the node's byte number `mark` (counted from now on)."""
        with self._lock:
            self.mark = self.sent_by_node + mark
            self.on_mark = hook

    def _accept(self) -> None:
        """Relay every connection until closed."""
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            try:
                node = socket.create_connection((host, int(port)), timeout=10)
            except OSError:
                client.close()
                continue
            node.settimeout(None)
            with self._lock:
                self._sockets += [client, node]
            threading.Thread(target=self._pipe, args=(client, node, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(node, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_node: bool) -> None:
        """Copy one direction until either side closes, then close both."""
        try:
            while data := source.recv(PIECE):
                if from_node:
                    if self.delay:
                        time.sleep(self.delay)
                    hook = None
                    with self._lock:
                        if self.mark is not None and self.sent_by_node + len(data) >= self.mark:
                            hook, self.on_mark, self.mark = self.on_mark, None, None
                        else:
                            self.sent_by_node += len(data)
                    if hook is not None:
                        hook()
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
