"""The stock on hand of one ingredient: the supply bought and not yet usable at the label
maximum dose, consumed oldest first (FIFO) at one day of supply per calendar day.

Every operation is O(1) amortised, so walking a patient's fills is linear in their
number: a running total of the stock, and the largest allowed days of the fills in stock
as a sliding-window maximum (a deque of decreasing values; the oldest of equal values
first, as a scan from the oldest would pick)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rxguard.engine.fills import Fill


@dataclass
class Stock:
    entries: deque[list[Any]] = field(default_factory=deque)  # [serial, fill, remaining days], oldest first
    total: float = 0.0
    pushed: list[Fill] = field(default_factory=list)  # every fill pushed, by serial
    _best: deque[tuple[int, float, str]] = field(default_factory=deque)  # (serial, allowed, basis), decreasing
    _rule: Any = None  # the parameters the maximum was computed with
    _allowed: Callable[[Fill], tuple[float, str]] | None = None

    def copy(self) -> Stock:
        """An independent copy (the fills themselves are shared)."""
        return Stock(
            deque([list(entry) for entry in self.entries]),
            self.total,
            list(self.pushed),
            deque(self._best),
            self._rule,
            self._allowed,
        )

    def consume(self, days: float) -> None:
        """Use `days` of supply, oldest first."""
        entries = self.entries
        while days > 0 and entries:
            head = entries[0]
            if head[2] > days:
                head[2] -= days
                self.total -= days
                return
            days -= head[2]
            self.total -= head[2]
            entries.popleft()
            self._drop_before(entries[0][0] if entries else len(self.pushed))
        if not entries:
            self.total = 0.0

    def clear(self) -> None:
        self.entries.clear()
        self._best.clear()
        self.total = 0.0

    def push(self, fill: Fill) -> None:
        serial = len(self.pushed)
        self.pushed.append(fill)
        self.entries.append([serial, fill, fill.days])
        self.total += fill.days
        if self._allowed is not None:
            self._add_best(serial, *self._allowed(fill))

    def __iter__(self) -> Iterator[tuple[Fill, float]]:
        return ((fill, remaining) for _, fill, remaining in self.entries)

    @property
    def head_serial(self) -> int:
        return self.entries[0][0] if self.entries else len(self.pushed)

    def largest_allowed(self, key: Any, allowed: Callable[[Fill], tuple[float, str]]) -> tuple[float, str]:
        """The largest `allowed(fill)` of the fills in stock (the oldest of equals), kept
        incrementally while `key` (the parameters it depends on) stays the same."""
        if key is not self._rule:
            self._rule, self._allowed = key, allowed
            self._best.clear()
            for serial, fill, _ in self.entries:
                self._add_best(serial, *allowed(fill))
        if not self._best:
            return 0.0, "acute"
        _, days, basis = self._best[0]
        return days, basis

    def _add_best(self, serial: int, days: float, basis: str) -> None:
        best = self._best
        while best and best[-1][1] < days:
            best.pop()
        best.append((serial, days, basis))

    def _drop_before(self, serial: int) -> None:
        best = self._best
        while best and best[0][0] < serial:
            best.popleft()
