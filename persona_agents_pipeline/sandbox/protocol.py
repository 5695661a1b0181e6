"""How the sandbox answers, shaped like the real API: replies, error details (the envelopes of
https://elevenlabs.io/docs/eleven-api/resources/errors), and FastAPI-style 422 issues for bad query parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

from .validation import issue


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)
    drip_interval: float = 0.0  # seconds between the body's bytes (a slow answer)
    # Called once the answer is written, when the gateway counts the request until then (a dripped answer).
    after_written: Callable[[], None] | None = None


DROP = Reply(status=0)  # sentinel: close the connection without a response
RAW_BODY_PREFIX = "\x00raw:"  # a string body starting with this is sent as is, not as JSON


def error_reply(status: int, kind: str, code: str, message: str, request_id: str,
                *, legacy_status: str | None = None) -> Reply:
    detail = {"type": kind, "code": code, "status": legacy_status or code, "message": message,
              "request_id": request_id}
    return Reply(status, {"detail": detail})


def invalid_key_reply(request_id: str) -> Reply:
    return error_reply(401, "authentication_error", "unauthorized", "Invalid API key", request_id,
                       legacy_status="invalid_api_key")


def internal_error_reply(request_id: str) -> Reply:
    return error_reply(500, "internal_error", "internal_error", "An internal error occurred.", request_id)


def unprocessable(issues: list[dict[str, Any]]) -> Reply:
    return Reply(422, {"detail": issues})


class QueryError(Exception):
    def __init__(self, issues: list[dict[str, Any]]) -> None:
        self.issues = issues


class Query:
    """FastAPI-like query parameter parsing that collects 422 issues."""

    def __init__(self, raw: str) -> None:
        self._values = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def text(self, name: str) -> str | None:
        return self._values.get(name)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._values.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise QueryError([issue("bool_parsing", ["query", name], "Input should be a valid boolean, "
                                "unable to interpret input", value)])

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._values.get(name)
        if raw is None:
            return default
        loc = ["query", name]
        try:
            value = int(raw)
        except ValueError:
            raise QueryError([issue("int_parsing", loc, "Input should be a valid integer, unable to parse "
                                    "string as an integer", raw)]) from None
        if value < low:
            raise QueryError([issue("greater_than_equal", loc, f"Input should be greater than or equal to {low}",
                                    raw, {"ge": low})])
        if value > high:
            raise QueryError([issue("less_than_equal", loc, f"Input should be less than or equal to {high}",
                                    raw, {"le": high})])
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self._values.get(name, default)
        if value not in allowed:
            expected = ", ".join(f"'{a}'" for a in allowed)
            raise QueryError([issue("enum", ["query", name], f"Input should be {expected}", value,
                                    {"expected": expected})])
        return value
