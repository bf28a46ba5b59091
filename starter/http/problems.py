"""RFC 9457 problem details: every error of the API is ``application/problem+json``.

A problem names its ``type`` (a URN documented in docs/api.md), a ``title`` that is the same for
every problem of the type, the HTTP ``status``, a ``detail`` for this occurrence, and, for invalid
input, the ``field`` and every error found (``errors``). Nothing a caller sent is echoed: the
details never carry a value, so a password or a code cannot end up in a response or a log.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:registration:problem:"


class FieldError(BaseModel):
    field: str = Field(description="The field, dotted for nested ones (``profile.company``).")
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(description=f"``{TYPE_PREFIX}<name>``, see docs/api.md")
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="The (first) field at fault, for invalid input.")
    errors: list[FieldError] | None = None
    outcome: str | None = Field(None, description="Activation and resend outcomes: which one.")
    attempts_left: int | None = None
    state: str | None = Field(None, description="A registration's state (``not_pending``).")
    retry_after: int | None = Field(None, description="Seconds, as in ``Retry-After``.")


TITLES = {
    "invalid-input": "Invalid input",
    "body-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "not-acceptable": "Not acceptable",
    "rate-limited": "Too many requests",
    "unauthorized": "Missing or wrong bearer token",
    "invalid-code": "Invalid code",
    "too-many-attempts": "Too many attempts",
    "expired": "Registration expired",
    "not-pending": "Nothing pending",
    "activation-failed": "Activation failed",
    "already-registered": "Already registered",
    "resend-throttled": "Resend throttled",
    "resend-limit-reached": "Resend limit reached",
    "unknown-registration": "Unknown registration",
    "busy": "Busy",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
}


def problem(
    name: str,
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """The problem ``name`` (a key of ``TITLES``) as a response."""
    body = Problem(
        type=f"{TYPE_PREFIX}{name}",
        title=TITLES[name],
        status=status,
        detail=detail,
        **extensions,
    ).model_dump(exclude_none=True)
    return JSONResponse(body, status, headers=headers, media_type=MEDIA_TYPE)


def documented(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of an operation for problems with ``statuses``."""
    return {
        status: {
            "description": descriptions.get(f"s{status}", _DESCRIPTIONS[status]),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **({"headers": _RETRY_AFTER} if status in (429, 503) else {}),
        }
        for status in statuses
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
_DESCRIPTIONS = {
    400: "Invalid input (``invalid-input``, naming the field); nothing was started or counted",
    401: "Missing or wrong bearer token",
    403: "Too many attempts",
    404: "Unknown registration",
    409: "Not pending",
    410: "Expired",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid code",
    429: "Rate limited (``Retry-After``)",
    503: "Temporal or its worker is not reachable, or busy: retry (``Retry-After``)",
}
