"""The alert outbox: every message is recorded before it is published, and marked sent
only after the sink acknowledged it (docs/local.md, "Alerts and letters").

- `record(messages)` keeps messages whose `message_id` was never recorded and returns
  those (a retried or repeated run records nothing twice: ids are deterministic);
- `pending()` lists recorded messages not yet sent, in the order they were recorded;
- `mark_sent(ids)` marks them sent, once the sink has them.

A run that dies between recording and publishing leaves its messages pending; the next
run publishes them first. Adapters: `InMemoryOutbox` (here; tests, dry runs),
`rxguard.local.state` (SQLite, the local deployment) and the DynamoDB one.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from rxguard.alerts.schema import AlertMessage

Topic = str  # "alerts" | "letters"
TOPICS = ("alerts", "letters")


@dataclass(frozen=True)
class OutboxEntry:
    """One recorded message and the topic it goes to."""

    topic: Topic
    message: AlertMessage

    @property
    def message_id(self) -> str:
        return self.message.message_id


class Outbox(ABC):
    """Messages recorded before publishing; the contract every adapter passes (tests/contract/)."""

    @abstractmethod
    def record(self, entries: Sequence[OutboxEntry]) -> list[OutboxEntry]:
        """Record the entries whose message_id is unknown; return them (in the given order).
        An id recorded before, sent or not, is not recorded again."""

    @abstractmethod
    def pending(self) -> list[OutboxEntry]:
        """Recorded entries not yet marked sent, in recording order."""

    @abstractmethod
    def mark_sent(self, message_ids: Iterable[str]) -> None:
        """Mark these messages sent (unknown ids are ignored; marking twice is harmless)."""

    def recorded(self, message_ids: Collection[str]) -> set[str]:
        """Which of these ids were ever recorded (sent or pending). Optional: adapters that
        cannot answer raise NotImplementedError and callers fall back on what they know."""
        raise NotImplementedError


@dataclass
class InMemoryOutbox(Outbox):
    """Dicts behind a lock: unit tests, dry runs, one process."""

    _entries: dict[str, OutboxEntry] = field(default_factory=dict)  # insertion order = recording order
    _sent: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, entries: Sequence[OutboxEntry]) -> list[OutboxEntry]:
        fresh: list[OutboxEntry] = []
        with self._lock:
            for entry in entries:
                if entry.message_id in self._entries:
                    continue
                self._entries[entry.message_id] = entry
                fresh.append(entry)
        return fresh

    def pending(self) -> list[OutboxEntry]:
        with self._lock:
            return [e for mid, e in self._entries.items() if mid not in self._sent]

    def recorded(self, message_ids: Collection[str]) -> set[str]:
        with self._lock:
            return {mid for mid in message_ids if mid in self._entries}

    def mark_sent(self, message_ids: Iterable[str]) -> None:
        with self._lock:
            self._sent.update(mid for mid in message_ids if mid in self._entries)


Deliver = Callable[[OutboxEntry], None]  # raises when the sink did not take the message


def drain(outbox: Outbox, deliver: Deliver, *, batch: int = 500) -> tuple[int, int]:
    """Publish every pending entry through `deliver`, marking each sent only after
    `deliver` returned. Stops at the first failure (the rest stays pending for the next
    run) and re-raises it. Returns (sent, still pending)."""
    sent = 0
    todo = outbox.pending()
    done: list[str] = []
    try:
        for entry in todo:
            deliver(entry)
            done.append(entry.message_id)
            if len(done) >= batch:
                outbox.mark_sent(done)
                sent += len(done)
                done = []
    finally:
        if done:
            outbox.mark_sent(done)
            sent += len(done)
    return sent, len(todo) - sent
