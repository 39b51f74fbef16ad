"""Alert message schema v1: the JSON body and the SNS message attributes.

`docs/alert-message.schema.json` is the published JSON Schema of the body; a test checks
that every message built here validates against it. Patient numbers (psn_no) never
appear in a message: `pseudonym()` replaces them with a keyed hash that is stable for
one key, so subscribers can group findings of one patient without learning who it is;
inspectors look the patient up in the findings table by `finding_id`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1"

MessageType = Literal["finding", "digest", "letter", "correction", "access"]

# Attribute names every message carries (filter policies use them).
ATTRIBUTES = ("message_type", "severity", "rule_id", "region", "institution_id", "subject_type", "batch_id")


def pseudonym(psn_no: str, key: str) -> str:
    """Keyed pseudonym of a patient number: `p-` + 20 hex digits of HMAC-SHA256(key, psn_no)."""
    digest = hmac.new(key.encode("utf-8"), psn_no.encode("utf-8"), hashlib.sha256).hexdigest()
    return "p-" + digest[:20]


class AlertMessage(BaseModel):
    """One message for the alerts or letters topic.

    `message_id` is deterministic (`finding/<finding_id>`, `digest/<batch_id>/<institution>`,
    `letter/<batch_id>/<addressee>`): a sink publishes a given id at most once.
    Attribute values are strings, or lists of strings (sent as SNS `String.Array`).
    """

    model_config = ConfigDict(frozen=True)

    message_id: str = Field(min_length=1)
    message_type: MessageType
    subject: str = Field(max_length=99)  # SNS Subject: ASCII, < 100 characters
    body: dict[str, Any]
    attributes: dict[str, str | list[str]]

    def body_json(self) -> str:
        return json.dumps(self.body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def sns_attributes(self) -> dict[str, dict[str, str]]:
        """The attributes in the shape of SNS `MessageAttributes` (empty values left out)."""
        out: dict[str, dict[str, str]] = {}
        for name, value in sorted(self.attributes.items()):
            if isinstance(value, list):
                if value:
                    out[name] = {"DataType": "String.Array", "StringValue": json.dumps(sorted(value))}
            elif value:
                out[name] = {"DataType": "String", "StringValue": value}
        return out
