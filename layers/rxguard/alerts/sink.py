"""Where notifications go: the `NotificationSink` contract and an in-memory sink.

A sink publishes a message with a given `message_id` at most once, however often it is
asked (a retried batch asks again): that is how each finding is alerted once. The AWS
sink (`rxguard.alerts.aws`) keeps a marker object per message id; the in-memory sink a set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from rxguard.alerts.schema import AlertMessage


class NotificationSink(ABC):
    @abstractmethod
    def publish_alert(self, message: AlertMessage) -> bool:
        """Publish on the alerts topic unless `message.message_id` was published before.
        True when published now, False when it was a duplicate."""

    def publish_alerts(self, messages: Sequence[AlertMessage]) -> list[bool]:
        """`publish_alert` for each message, in order (a sink that records them together,
        in one transaction, overrides it)."""
        return [self.publish_alert(message) for message in messages]

    @abstractmethod
    def put_letter(self, key: str, body: bytes, content_type: str) -> str:
        """Store a letter document under `key` (overwrite: same key, same letter); return its URI."""

    @abstractmethod
    def publish_letter(self, message: AlertMessage) -> bool:
        """Announce a letter on the letters topic, at most once per `message.message_id`."""

    def publish_letters(self, messages: Sequence[AlertMessage]) -> list[bool]:
        """`publish_letter` for each message, in order (a sink that records them together,
        in one transaction, overrides it)."""
        return [self.publish_letter(message) for message in messages]

    def was_published(self, message_id: str) -> bool:
        """True when `message_id` was published by an earlier attempt. Lets a retry skip
        rendering letters already announced (a timed-out run then resumes, not restarts).
        The default says no: everything is rendered again and only publishing dedupes."""
        return False

    def letter_uri(self, key: str) -> str:
        """The URI `put_letter(key, ...)` returns, without storing anything."""
        return key


@dataclass
class InMemorySink(NotificationSink):
    """Keeps everything in lists and dicts: unit tests, benchmarks, dry runs."""

    alerts: list[AlertMessage] = field(default_factory=list)
    letters: list[AlertMessage] = field(default_factory=list)
    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    duplicates: int = 0

    def _once(self, message: AlertMessage) -> bool:
        if message.message_id in self.sent:
            self.duplicates += 1
            return False
        self.sent.add(message.message_id)
        return True

    def publish_alert(self, message: AlertMessage) -> bool:
        if not self._once(message):
            return False
        self.alerts.append(message)
        return True

    def put_letter(self, key: str, body: bytes, content_type: str) -> str:
        self.documents[key] = (body, content_type)
        return self.letter_uri(key)

    def was_published(self, message_id: str) -> bool:
        return message_id in self.sent

    def letter_uri(self, key: str) -> str:
        return f"memory://{key}"

    def publish_letter(self, message: AlertMessage) -> bool:
        if not self._once(message):
            return False
        self.letters.append(message)
        return True
