"""The inspector's console: review queue, finding, patient timeline, institution report
card, rules, batches and the API docs, server-rendered over the API's services
(docs/console.md)."""

from rxguard.console.app import Console, console_app
from rxguard.console.sources import BatchRecord, ConsoleSources, LetterRecord

__all__ = ["BatchRecord", "Console", "ConsoleSources", "LetterRecord", "console_app"]
