"""Benchmarks: they print figures and never run in pytest (`make bench`)."""

from __future__ import annotations

import time

REFERENCE_LOOP_ITERATIONS = 1_000_000


def reference_loop_seconds(repeats: int = 3) -> float:
    """CPU seconds of a fixed pure-Python loop, the best of `repeats`: how fast this
    machine's core runs Python at this moment. This VM's cores change speed from hour to
    hour (the same code and batch took 15.6 s of CPU at one time and 28.5 at another), so
    each figure is reported with it; figures of two runs compare after dividing by it."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        total = 0
        for i in range(REFERENCE_LOOP_ITERATIONS):
            total += i * i % 7
        best = min(best, time.process_time() - started)
    return round(best, 3)
