"""What a request must be before the resolver parses it (issue 15): a JSON body, numbers
of bounded size. Each refusal is a 4xx that names the problem, never a 500 from deep in
a parser (`json.loads` raises on a 4,301-digit integer; Powertools raises on a content type
it cannot read or a multipart body without a boundary).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from rxguard.api.errors import ApiError, InvalidField, UnsupportedMediaType

MAX_NUMBER_DIGITS = 1000  # no field of a request holds a longer digit run
_LONG_DIGITS = re.compile(rf"[0-9]{{{MAX_NUMBER_DIGITS + 1}}}")
_JSON_TYPES = ("application/json", "text/json")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header by name, case-insensitively (HTTP header names are)."""
    wanted = name.lower()
    for source in ("headers", "multiValueHeaders"):
        for key, value in (event.get(source) or {}).items():
            if str(key).lower() == wanted:
                return str(value[-1] if isinstance(value, list) and value else value)
    return None


def request_guard(event: Mapping[str, Any]) -> ApiError | None:
    """The refusal of a request whose body the API would not read, else None."""
    if str(event.get("httpMethod") or "").upper() not in BODY_METHODS:
        return None
    body = event.get("body")
    content_type = (header(event, "Content-Type") or "").strip()
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media not in _JSON_TYPES and not media.endswith("+json"):
        hint = ""
        if media == "application/x-www-form-urlencoded":
            hint = " (curl -d sends form encoding by default: add -H 'Content-Type: application/json')"
        shown = content_type[:80]
        return UnsupportedMediaType(
            f"Content-Type {shown!r} is not accepted: the body must be JSON (application/json){hint}", "Content-Type"
        )
    if not body:
        return None
    if event.get("isBase64Encoded"):
        try:
            text = base64.b64decode(body, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return InvalidField("request body is not valid base64-encoded UTF-8", None, code="invalid_json")
    else:
        text = str(body)
    if _LONG_DIGITS.search(text):
        return InvalidField(
            f"request body holds a run of more than {MAX_NUMBER_DIGITS} digits: no field takes such a value",
            None,
            code="invalid_json",
        )
    return None


def with_json_content_type(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its JSON content type spelled as the resolver reads it (`APPLICATION/JSON`,
    `application/vnd+json` and a charset are JSON too; Powertools compares case-sensitively)."""
    if str(event.get("httpMethod") or "").upper() not in BODY_METHODS or header(event, "Content-Type") is None:
        return event
    out = dict(event)
    for source in ("headers", "multiValueHeaders"):
        values = {k: v for k, v in (event.get(source) or {}).items() if str(k).lower() != "content-type"}
        values["Content-Type"] = ["application/json"] if source == "multiValueHeaders" else "application/json"
        out[source] = values
    return out
