"""Notify: alert the batch's new and updated findings and render their letters (the
alerts module alerts each finding at most once, however often this runs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rxguard.dynamo import ResultStore
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding
from rxguard.observability import logger
from rxguard.workflow.screen import ChunkFindings


class NotifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_id: str
    chunk_results: list[Any] = Field(default_factory=list)  # Map output: dicts, or null for a lost item


def ok_results(chunk_results: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The Map results of chunks that were screened (null and `ok: false` entries left out)."""
    return [r for r in chunk_results if isinstance(r, Mapping) and r.get("ok") is True and r.get("result_key")]


def findings_to_alert(results: ResultStore, chunk_results: Sequence[Any]) -> list[Finding]:
    """New and updated findings of every screened chunk, once each, in id order."""
    by_id: dict[str, Finding] = {}
    for entry in ok_results(chunk_results):
        found = ChunkFindings.model_validate(results.get_json(str(entry["result_key"])))
        for finding in [*found.new, *found.updated]:
            by_id[finding.finding_id] = finding
    return [by_id[k] for k in sorted(by_id)]


def notify_chunks(request: NotifyRequest, *, results: ResultStore, kb: KnowledgeBase, sink: Any) -> dict[str, Any]:
    from rxguard.alerts import notify_batch

    findings = findings_to_alert(results, request.chunk_results)
    summary = notify_batch(findings, batch_id=request.batch_id, kb=kb, sink=sink)
    out = _as_dict(summary)
    out.setdefault("findings", len(findings))
    logger.info(
        "batch notified", extra={"batch_id": request.batch_id, **{k: v for k, v in out.items() if isinstance(v, int)}}
    )
    return out


def _as_dict(summary: Any) -> dict[str, Any]:
    if hasattr(summary, "model_dump"):
        return dict(summary.model_dump(mode="json"))
    if hasattr(summary, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(summary)
    return dict(summary) if isinstance(summary, Mapping) else {"summary": str(summary)}
