"""What every benchmark measures the same way: rates, and how much of the machine other processes took."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil


def rate(count: int, fn: Callable[[], object]) -> float:
    """Items per second of one call of fn over `count` items."""
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def busy_seconds() -> tuple[float, float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its reaped children,
    wall clock): the difference over a run tells how much of the machine other processes took."""
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system, time.perf_counter()


def other_cpu_share(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Share of the machine's CPU time that other processes used between two `busy_seconds` readings."""
    foreign = max(0.0, (end[0] - start[0]) - (end[1] - start[1]))
    return min(1.0, foreign / max((end[2] - start[2]) * (psutil.cpu_count() or 1), 1e-9))
