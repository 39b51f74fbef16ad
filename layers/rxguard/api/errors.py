"""Domain errors of the API and their HTTP answers (the resolver maps them in one place).

Every error answer is `{"error": {"code", "message", "field"}}`; `field` names the
offending request field as a path (`lines[0].cnt`, `data.patient_dtos[0].patn_id`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class ApiError(Exception):
    """An error answer: its HTTP status and code are the class's (`class NotFound(ApiError,
    status=404, code="not_found")`), the code may be refined per error (`code="no_route"`)."""

    status = 400
    code = "bad_request"

    def __init_subclass__(cls, *, status: int, code: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status, cls.code = status, code

    def __init__(self, message: str, field: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class InvalidField(ApiError, status=400, code="invalid_field"): ...


class Forbidden(ApiError, status=403, code="forbidden"): ...


class NotFound(ApiError, status=404, code="not_found"): ...


class Conflict(ApiError, status=409, code="conflict"): ...


class PayloadTooLarge(ApiError, status=413, code="too_large"): ...


class UnsupportedMediaType(ApiError, status=415, code="unsupported_media_type"): ...


class InternalError(ApiError, status=500, code="internal"): ...


def field_path(loc: Sequence[Any]) -> str | None:
    """`("body", "lines", 0, "cnt")` -> `lines[0].cnt`; `("query", "limit")` -> `limit`."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    # our discriminated body union adds the shape tag (rxguard / nhsa / nhsa-envelope)
    if parts and parts[0] in _SHAPE_TAGS:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("function-"):
            continue  # pydantic's validator wrappers in a loc
        else:
            out += f".{part}" if out else str(part)
    return out or None


_SHAPE_TAGS = frozenset({"rxguard", "nhsa", "nhsa-envelope"})


def from_validation_errors(errors: Iterable[dict[str, Any]]) -> ApiError:
    """The first pydantic/Powertools validation error as an ApiError naming the field."""
    for err in errors:
        kind = str(err.get("type", ""))
        loc = tuple(err.get("loc", ()))
        field = field_path(loc)
        if kind == "json_invalid":
            return InvalidField(
                f"request body is not valid JSON: {err.get('ctx', {}).get('error', '')}", None, code="invalid_json"
            )
        if kind == "missing":
            return InvalidField(f"{field or 'body'} is required", field, code="missing_field")
        if kind == "extra_forbidden":
            return InvalidField(f"{field} is not a field of this request", field, code="unknown_field")
        message = str(err.get("msg", "invalid value"))
        return InvalidField(f"{field or 'body'}: {message}", field)
    return InvalidField("invalid request")
