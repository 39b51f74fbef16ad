"""Alerts: messages on the alerts topic (schema v1), digests, muting, letters on demand.

Entry point: `notify_batch(findings, batch_id=..., kb=..., sink=...)`.
"""

from rxguard.alerts.notify import LetterRef, NotifySummary, notify_batch
from rxguard.alerts.schema import SCHEMA_VERSION, AlertMessage, pseudonym
from rxguard.alerts.settings import AlertSettings, AlertSettingsError
from rxguard.alerts.sink import InMemorySink, NotificationSink

__all__ = [
    "SCHEMA_VERSION",
    "AlertMessage",
    "AlertSettings",
    "AlertSettingsError",
    "InMemorySink",
    "LetterRef",
    "NotificationSink",
    "NotifySummary",
    "notify_batch",
    "pseudonym",
]
