"""Sequential document numbers (发文字号) from an atomic counter (docs/letters.md).

`机关代字〔年份〕序号号`: one series per 代字 per year, numbered from 1. The counter is a
`CounterStore` (`next_counter(name) -> int`, atomic): in memory here, DynamoDB
(`rxguard.dynamo.DynamoCounterStore`: UpdateItem ADD on the CountersTable; the letters
never import the AWS SDK, the composition roots wire it), or the local SQLite state
(`next_counter`). `NumberBook` makes numbering idempotent: the number given to a letter's
key (addressee + period) is kept and given again on a retry; only a key without one takes
the next value. Keeping needs `kept(name)` / `keep(name, value)` (first writer wins); a
counter store without them (the SQLite state) is paired with a `JsonNumberKeeper` file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class CounterStore(Protocol):
    def next_counter(self, name: str) -> int:
        """Atomically add 1 to the counter `name` (created at 0) and return the new value."""
        ...


@runtime_checkable
class NumberKeeper(Protocol):
    def kept(self, name: str) -> int | None:
        """The value kept under `name`, or None."""
        ...

    def keep(self, name: str, value: int) -> int:
        """Keep `value` under `name` unless a value is kept already; return the kept value."""
        ...


class InMemoryCounterStore:
    """Counters and kept numbers in dicts, thread-safe (tests, dry runs, one process)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def next_counter(self, name: str) -> int:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1
            return self.counters[name]

    def kept(self, name: str) -> int | None:
        return self.numbers.get(name)

    def keep(self, name: str, value: int) -> int:
        with self._lock:
            return self.numbers.setdefault(name, value)


class JsonNumberKeeper:
    """Kept numbers in a JSON file (the local deployment, beside the letters)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, int]:
        if not self.path.is_file():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()}

    def kept(self, name: str) -> int | None:
        return self._load().get(name)

    def keep(self, name: str, value: int) -> int:
        with self._lock:
            data = self._load()
            if name not in data:
                data[name] = value
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
                tmp.replace(self.path)
            return data[name]


class NumberBook:
    """Numbers per series (代字 + year), kept per letter key."""

    def __init__(self, counters: CounterStore, keeper: NumberKeeper | None = None) -> None:
        if keeper is None:
            if not isinstance(counters, NumberKeeper):
                raise TypeError("a counter store without kept numbers needs a NumberKeeper (e.g. JsonNumberKeeper)")
            keeper = counters
        self.counters = counters
        self.keeper = keeper

    def number(self, abbr: str, year: int, key: str) -> int:
        """The serial of the letter `key` in the series of `abbr` and `year`."""
        series = f"letter#{abbr}#{year}"
        kept = self.keeper.kept(f"{series}#{key}")
        if kept is not None:
            return kept
        return self.keeper.keep(f"{series}#{key}", self.counters.next_counter(series))


def document_number(abbr: str, year: int, serial: int) -> str:
    """`医保监函〔2026〕12号`: year in full in 六角括号, the serial without padding (GB/T 9704)."""
    return f"{abbr}〔{year}〕{serial}号"
