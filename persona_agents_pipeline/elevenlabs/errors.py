"""Typed errors for the ElevenLabs agents API.

`error_from_response` turns any error body the API is known to send into one of
these classes: the current envelope (documented at https://elevenlabs.io/docs/eleven-api/resources/errors)
``{"detail": {"type", "code", "status", "message", "request_id"}}``, the legacy
``{"detail": {"status", "message"}}``, FastAPI's 422 ``{"detail": [...]}`` and
plain-text bodies (proxies, load balancers).

`ElevenLabsError.ambiguous` answers the question callers care about after a
failed write: "may the server have done the work anyway?".
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

# Codes (detail.code or legacy detail.status) that mean "this key is not allowed to do it".
_PERMISSION_CODES = frozenset({"missing_permissions"})
_MAX_PLAIN_TEXT = 300


class ElevenLabsError(Exception):
    """Base class. `message` is the API's own text; `str()` adds status and code."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = " ".join(str(part) for part in (self.status_code, self.code) if part is not None)
        text = f"{head}: {self.message}" if head else self.message
        return f"{text} (request_id {self.request_id})" if self.request_id else text

    @property
    def ambiguous(self) -> bool:
        """True when the server may have carried out the request despite the error."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()!r})"


class AuthenticationError(ElevenLabsError):
    """401: key missing, unknown, or out of quota."""


class PermissionDeniedError(ElevenLabsError):
    """401 missing_permissions or 403: the key is valid but restricted."""


class ApiValidationError(ElevenLabsError):
    """400 / 422: the API rejected the request body or parameters."""


class NotFoundError(ElevenLabsError):
    """404."""


class RateLimitedError(ElevenLabsError):
    """429. Nothing was done; `retry_after` is the server's hint in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(ElevenLabsError):
    """5xx. The server may have failed after doing the work."""

    @property
    def ambiguous(self) -> bool:
        return True


class ApiConnectionError(ElevenLabsError):
    """No response. `request_sent` is False only when no connection was ever made."""

    def __init__(self, message: str, *, request_sent: bool, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)

    @property
    def ambiguous(self) -> bool:
        return self.request_sent


class ApiTimeoutError(ApiConnectionError):
    """Connect timeout (request_sent=False) or read timeout (request_sent=True)."""


class RedirectRefusedError(ElevenLabsError):
    """A 3xx answer that is not followed: to another origin, or one that would change the method. Nothing
    was done where the request was sent, and nothing was sent where the redirect points."""


class MalformedResponseError(ElevenLabsError):
    """A 2xx answer that is not JSON or lacks required fields."""

    def __init__(self, message: str, *, during_create: bool = False, **kwargs: Any) -> None:
        self.during_create = during_create
        super().__init__(message, **kwargs)

    @property
    def ambiguous(self) -> bool:
        # A create answered 2xx almost certainly created the agent; we just can't read its id.
        return self.during_create


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: integer/float seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _format_validation_item(item: Any) -> str:
    if not isinstance(item, Mapping):
        return str(item)
    loc = ".".join(str(part) for part in item.get("loc") or [])
    msg = str(item.get("msg") or item.get("message") or item.get("type") or "invalid")
    return f"{loc}: {msg}" if loc else msg


def _parse_body(body: str) -> tuple[str, str | None, str | None, str | None]:
    """Return (message, code, legacy_status, request_id) from any known error body."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if data is None:
        text = " ".join(body.split())[:_MAX_PLAIN_TEXT]
        return text or "(empty response body)", None, None, None
    detail = data.get("detail", data) if isinstance(data, Mapping) else data
    if isinstance(detail, list):
        first_type = detail[0].get("type") if detail and isinstance(detail[0], Mapping) else None
        return "; ".join(_format_validation_item(i) for i in detail), first_type, None, None
    if isinstance(detail, Mapping):
        code = detail.get("code")
        status = detail.get("status")
        message = detail.get("message") or detail.get("msg") or status or code or json.dumps(detail)
        request_id = detail.get("request_id")
        return (
            str(message),
            str(code or status) if (code or status) else None,
            str(status) if status else None,
            str(request_id) if request_id else None,
        )
    return str(detail)[:_MAX_PLAIN_TEXT], None, None, None


def error_from_response(
    status_code: int, body: str, headers: Mapping[str, str] | None = None
) -> ElevenLabsError:
    """Map an HTTP error answer onto the matching ElevenLabsError subclass."""
    headers = headers or {}
    message, code, legacy_status, request_id = _parse_body(body)
    request_id = request_id or headers.get("x-trace-id")
    fields: dict[str, Any] = {"status_code": status_code, "code": code, "request_id": request_id}
    if status_code == 401:
        if {code, legacy_status} & _PERMISSION_CODES:
            return PermissionDeniedError(message, **fields)
        return AuthenticationError(message, **fields)
    if status_code == 403:
        return PermissionDeniedError(message, **fields)
    if status_code in (400, 422):
        return ApiValidationError(message, **fields)
    if status_code == 404:
        return NotFoundError(message, **fields)
    if status_code == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RateLimitedError(message, retry_after=retry_after, **fields)
    if status_code >= 500:
        return ServerError(message, **fields)
    return ElevenLabsError(message, **fields)
