"""The local runtime's worker processes: they fork from a server process that imported the
domain once (multiprocessing's forkserver). This module imports nothing heavy, so the CLI
can start that server first thing and the server's imports run beside its own."""

from __future__ import annotations

import os
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
