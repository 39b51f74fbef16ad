"""The local runtime's process settings (rxguard.local.workers)."""

from __future__ import annotations

import gc

from rxguard.local.workers import RUN_GC_THRESHOLDS, tuned_gc


def test_a_run_raises_the_collector_thresholds_and_gives_them_back() -> None:
    # Given this process's collector settings (nothing frozen)
    gc.unfreeze()
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    # When a run's work happens under tuned_gc
    with tuned_gc():
        during = gc.get_threshold()
        frozen_during = gc.get_freeze_count()
        cycle: list[object] = []
        cycle.append(cycle)  # a cycle made during the run ...
        del cycle
        collected = gc.collect()
    # Then the collector ran less often during it, what existed before was frozen, and a
    # cycle made during the run was still collected
    assert during == RUN_GC_THRESHOLDS and during[0] > before[0]
    assert frozen_during > frozen
    assert collected >= 1
    # And afterwards the process has its own settings back
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen == 0
