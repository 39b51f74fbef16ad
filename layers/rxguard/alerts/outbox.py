"""The alert outbox: every message is recorded before it is published, and marked sent
only after the sink acknowledged it (docs/local.md, "Alerts and letters").

- `record(messages)` keeps messages whose `message_id` was never recorded and returns
  those (a retried or repeated run records nothing twice: ids are deterministic);
- `pending()` lists recorded messages not yet sent, in the order they were recorded;
- `mark_sent(ids)` marks them sent, once the sink has them.

A run that dies between recording and publishing leaves its messages pending; the next
run publishes them first. Adapters: `InMemoryOutbox` (here; tests, dry runs),
`rxguard.local.state` (SQLite, the local deployment) and `rxguard.alerts.outbox_dynamo`
(the OutboxTable on AWS). `RecordingSink` records what `notify_batch` would publish.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from rxguard.alerts.schema import AlertMessage
from rxguard.alerts.sink import NotificationSink

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


def drain(
    outbox: Outbox,
    deliver: Deliver,
    *,
    batch: int = 500,
    only: Collection[str] | None = None,
    limit: int | None = None,
) -> tuple[int, int]:
    """Publish every pending entry through `deliver`, marking each sent only after
    `deliver` returned. Stops at the first failure (the rest stays pending for the next
    run) and re-raises it. Returns (sent, still pending).

    `only` restricts the drain to those message ids (an API request publishes its own, not a
    backlog); `limit` publishes at most that many (a Lambda leaves the rest to the next run)."""
    sent = 0
    todo = outbox.pending()
    if only is not None:
        wanted = set(only)
        todo = [e for e in todo if e.message_id in wanted]
    if limit is not None:
        todo = todo[:limit]
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


def record_all(outbox: Outbox, topic: Topic, messages: Sequence[AlertMessage]) -> list[bool]:
    """Record the messages in one call (one transaction where the outbox can); for each,
    whether it was recorded now (False: its id was known, or repeated earlier in the list)."""
    fresh = {entry.message_id for entry in outbox.record([OutboxEntry(topic, m) for m in messages])}
    out = []
    for message in messages:
        out.append(message.message_id in fresh)
        fresh.discard(message.message_id)
    return out


class RecordingSink(NotificationSink):
    """A sink that records instead of publishing: alerts and letter announcements go into
    the outbox (`publish_*` is True when the id is new), letter documents to `documents`
    (a sink that stores them: S3 on AWS). `drain(outbox, ...)` then publishes. So every
    message of a batch is recorded before the first is published (issue 15)."""

    def __init__(self, outbox: Outbox, documents: NotificationSink) -> None:
        self.outbox = outbox
        self.documents = documents
        self.recorded_ids: list[str] = []  # recorded through this sink, in order

    def _record(self, topic: Topic, message: AlertMessage) -> bool:
        fresh = bool(self.outbox.record([OutboxEntry(topic, message)]))
        if fresh:
            self.recorded_ids.append(message.message_id)
        return fresh

    def publish_alert(self, message: AlertMessage) -> bool:
        return self._record("alerts", message)

    def publish_alerts(self, messages: Sequence[AlertMessage]) -> list[bool]:
        fresh = record_all(self.outbox, "alerts", messages)
        self.recorded_ids += [m.message_id for m, new in zip(messages, fresh, strict=True) if new]
        return fresh

    def publish_letter(self, message: AlertMessage) -> bool:
        return self._record("letters", message)

    def publish_letters(self, messages: Sequence[AlertMessage]) -> list[bool]:
        fresh = record_all(self.outbox, "letters", messages)
        self.recorded_ids += [m.message_id for m, new in zip(messages, fresh, strict=True) if new]
        return fresh

    def put_letter(self, key: str, body: bytes, content_type: str) -> str:
        return self.documents.put_letter(key, body, content_type)

    def letter_uri(self, key: str) -> str:
        return self.documents.letter_uri(key)

    def was_published(self, message_id: str) -> bool:
        """Recorded before (sent, or pending and published by the drain that follows)."""
        try:
            return message_id in self.outbox.recorded([message_id])
        except NotImplementedError:
            return self.documents.was_published(message_id)
