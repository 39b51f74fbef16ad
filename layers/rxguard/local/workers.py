"""The local runtime's worker processes: they fork from a server process that imported the
domain once (multiprocessing's forkserver). This module imports nothing heavy, so the CLI
can start that server first thing and the server's imports run beside its own."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import forkserver, get_context
from pathlib import Path
from typing import Any

PRELOAD = ["rxguard.local.orchestrator", "rxguard.local.state", "rxguard.ingest", "rxguard.screening"]


def worker_context() -> Any:
    """Worker processes fork from a small server process that imported the domain once
    (forkserver): no SQLite connection or thread of this process crosses a fork, and a
    worker does not pay the ~1 s of imports a spawned interpreter would."""
    import rxguard

    # the server is a fresh interpreter: it must import this rxguard, not another on its path
    layer = str(Path(rxguard.__file__).resolve().parents[1])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if layer not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([layer, *[p for p in paths if p]])
    context = get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_early() -> None:
    """Start the worker server now (it imports the domain, ~0.4 s of CPU, while this
    process imports its own); the pool made later forks its workers from it."""
    worker_context()
    forkserver.ensure_running()


# A run allocates millions of objects and keeps few: the lines, findings and rows of a chunk
# are acyclic and freed by reference counting as soon as the chunk is done. CPython's default
# cyclic collector (thresholds 700, 10, 10) still walks the heap every few hundred
# allocations: 15% of a chunk worker's CPU, measured. The run raises the first threshold and
# freezes what was loaded before it (modules, the knowledge base), so the collector runs
# ~70x less often and never scans those; cycles are still collected.
RUN_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """For a process that does a run's work until it exits (a worker)."""
    gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLDS)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """`tune_gc` for the length of a run in a process that lives on (tests, serve): the
    thresholds and the frozen objects are given back afterwards."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if not frozen:  # (unfreeze gives back every frozen object: only when none was before)
            gc.unfreeze()


def exit_with(pid: int) -> None:
    """End this worker as soon as process `pid` (the orchestrator) has ended. A pool's
    workers wait for tasks on a queue whose writing end they hold themselves, and they hold
    the forkserver's too: when a run is killed (kill -9, out of memory), they and the
    server would wait for ever, holding the state open. A thread waits on the process
    (a pidfd; polls once a second where there is none) and exits the worker."""
    import select
    import threading

    def watch() -> None:
        try:
            handle = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd here (not Linux >= 5.3): poll
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:  # alive, another user's (a pid reused): keep polling
                    pass
                time.sleep(1.0)
        else:
            select.select([handle], [], [])  # readable once the process has ended
        os._exit(70)  # EX_SOFTWARE: the orchestrator is gone; nothing of this worker's is pending

    threading.Thread(target=watch, name="rxguard-orchestrator-watch", daemon=True).start()


def release_memory() -> None:
    """Give the C heap's free memory back to the system (glibc `malloc_trim`; nothing
    elsewhere). After Prepare the orchestrator held ~20 MB a 300k-line batch of freed
    buffers (the normalized rows that came through the workers' pipes), more at 1M."""
    import ctypes

    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # this process's C library (glibc has it)
    except (OSError, TypeError):  # no C library to load by name here
        return
    if trim is not None:
        trim(0)
