"""Deterministic names: the batch id and the execution name of one S3 object version.

The same object (bucket, key, version id or ETag) always gives the same batch id, so a
duplicate event can start at most one execution (the offline harness names executions
with `execution_name`) and is recognised by Prepare's claim on AWS, where EventBridge
names executions itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from rxguard.errors import BatchInputError


class S3ObjectRef(BaseModel):
    """The dropped object, as the EventBridge `Object Created` detail names it."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size: int | None = None

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> S3ObjectRef:
        try:
            bucket = detail["bucket"]["name"]
            obj = detail["object"]
            key = obj["key"]
        except (KeyError, TypeError) as exc:
            raise BatchInputError(f"event detail: missing field {exc} (expected bucket.name and object.key)") from exc
        return cls(
            bucket=bucket,
            key=key,
            etag=(obj.get("etag") or "").strip('"') or None,
            version_id=obj.get("version-id") or None,
            size=obj.get("size"),
        )

    def as_dict(self) -> dict[str, str | None]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "version_id": self.version_id}


def batch_id_for(ref: S3ObjectRef) -> str:
    """40 hex digits of SHA-256 over bucket, key, version id and ETag."""
    raw = "\x1f".join([ref.bucket, ref.key, ref.version_id or "", ref.etag or ""])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


def execution_name(ref: S3ObjectRef) -> str:
    """`rx-<batch id>`: 43 characters of [a-z0-9-], within Step Functions' 80-character limit."""
    return f"rx-{batch_id_for(ref)}"


def batch_id_from_state(state: Mapping[str, Any]) -> str | None:
    """The batch id from whatever the state machine carried: Prepare's output or the original event."""
    if isinstance(state.get("batch_id"), str):
        return str(state["batch_id"])
    detail = state.get("detail")
    if isinstance(detail, Mapping):
        try:
            return batch_id_for(S3ObjectRef.from_detail(detail))
        except BatchInputError:
            return None
    return None


# where things live in the results bucket
def manifest_key(batch_id: str) -> str:
    return f"batches/{batch_id}/manifest.json"


def rejected_key(batch_id: str) -> str:
    return f"batches/{batch_id}/rejected.jsonl"


def report_key(batch_id: str) -> str:
    return f"batches/{batch_id}/report.json"


def chunk_key(batch_id: str, index: int) -> str:
    return f"chunks/{batch_id}/{index:05d}.jsonl"


def result_key(batch_id: str, chunk: str) -> str:
    name = chunk.rsplit("/", 1)[-1].removesuffix(".jsonl")
    return f"batches/{batch_id}/results/{name}.json"
