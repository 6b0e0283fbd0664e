"""`healthpsi serve` as a child process: started on a free loopback port, ready when /api/v1/health
answers, stopped gracefully (SIGTERM, then SIGKILL). Used by the load benchmark and the service tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

SERVING = re.compile(r"serving .* on (http://[\d.]+:\d+) ")


class ServiceProcess:
    """One `healthpsi serve --run RUN --listen 127.0.0.1:0 [EXTRA...]` process; its output goes to
    `log_path` (default RUN/service/serve-<n>.log). Its address is read from what it prints, so that two
    services over one run do not race for RUN/service/port."""

    def __init__(self, run: Path, *extra: str, workers: int = 1, log_path: Path | None = None) -> None:
        self.run = run
        self.log_path = log_path or run / "service" / f"serve-{time.monotonic_ns()}.log"
        args = ["serve", "--run", str(run), "--listen", "127.0.0.1:0", *extra]
        if workers != 1:
            args += ["--workers", str(workers)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "healthpsi.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self.url = ""
        self.port = 0

    def log(self) -> str:
        """Everything the service printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> ServiceProcess:
        """Wait until the service printed its address and answers /api/v1/health (else raise with its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"healthpsi serve exited {self.process.returncode}:\n{self.log()[-3000:]}")
            found = SERVING.search(self.log())
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rpartition(":")[2])
                try:
                    with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=5) as response:
                        if response.status == 200:
                            return self
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"healthpsi serve not ready within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def tree(self) -> list[psutil.Process]:
        """The service's process and its live descendants (uvicorn's workers)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown), SIGKILL after `timeout` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=30)
