"""The sandbox's request logic, independent of HTTP transport.

`SandboxApi.handle` takes one parsed request and returns a `Reply` (or `DROP`,
meaning "close the connection without answering"). Limits and faults are
applied here, in this order: concurrency limit, rate limit, latency, auth,
random 5xx, then the route itself (reference §2, §4, §9).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import string
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable
from urllib.parse import parse_qs

from . import data
from .agent_store import AgentStore, decode_cursor
from .validation import deep_merge, issue, validate_agent_body

CONCURRENCY_MESSAGE = (
    "Too many concurrent requests. Your current subscription is associated with a maximum of {n} concurrent "
    "requests (running in parallel). This is done such that a single user does not overwhelm our systems and "
    "affect other users negatively. Please upgrade your subscription or contact sales if you want to increase "
    "this limit."
)
BUSY_MESSAGE = ("Our services are experiencing high levels of traffic and your request could not be processed. "
                "Retry the request with exponential backoff.")
RATE_MESSAGE = "Too many requests. You have exceeded the rate limit of {n} requests per second; retry with backoff."
_ID_ALPHABET = string.ascii_lowercase + string.digits
_REQUEST_LOG_SIZE = 100_000
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@dataclass
class SandboxConfig:
    """Limits and faults; all changeable at runtime through POST /_sandbox/config."""

    latency: float = 0.0
    rate_limit: float | None = None
    max_concurrent: int | None = None
    retry_after: bool = True
    error_rate: float = 0.0
    error_after_create_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    drop_delete_response_rate: float = 0.0
    # How searches (agent lists with `search`, i.e. adoption lookups) fail, at search_fault_rate:
    # "non_json" (200 with an HTML body), "400", "401", "429" (Retry-After: 0) or "timeout" (answers
    # only after search_timeout_seconds).
    search_fault: str | None = None
    search_fault_rate: float = 1.0
    search_timeout_seconds: float = 2.0
    system_busy_rate: float = 0.0  # fraction answered 429 system_busy (nothing is done)
    # How the account's concurrency (max_concurrent) is made known, as the real API may: "header"
    # (current-/maximum-concurrent-requests on every answer), "user" (GET /v1/user
    # subscription_extras.concurrency), "both", or "none" (then /v1/user shows only the plan).
    announce_limit: str = "user"
    seed: int | None = None


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    arrived: float  # time.monotonic() when the request was read
    method: str
    path: str
    status: int | None  # None: connection dropped without an answer


DROP = Reply(status=0)  # sentinel: close the connection without a response
RAW_BODY_PREFIX = "\x00raw:"  # a string body starting with this is sent as is, not as JSON


def _error(status: int, kind: str, code: str, message: str, request_id: str,
           *, legacy_status: str | None = None) -> Reply:
    detail = {"type": kind, "code": code, "status": legacy_status or code, "message": message,
              "request_id": request_id}
    return Reply(status, {"detail": detail})


def _unprocessable(issues: list[dict[str, Any]]) -> Reply:
    return Reply(422, {"detail": issues})


def _new_agent_id() -> str:
    return "agent_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(28))


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class _QueryError(Exception):
    def __init__(self, issues: list[dict[str, Any]]) -> None:
        self.issues = issues


class _Query:
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
        raise _QueryError([issue("bool_parsing", ["query", name], "Input should be a valid boolean, "
                                 "unable to interpret input", value)])

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._values.get(name)
        if raw is None:
            return default
        loc = ["query", name]
        try:
            value = int(raw)
        except ValueError:
            raise _QueryError([issue("int_parsing", loc, "Input should be a valid integer, unable to parse "
                                     "string as an integer", raw)]) from None
        if value < low:
            raise _QueryError([issue("greater_than_equal", loc, f"Input should be greater than or equal to {low}",
                                     raw, {"ge": low})])
        if value > high:
            raise _QueryError([issue("less_than_equal", loc, f"Input should be less than or equal to {high}",
                                     raw, {"le": high})])
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self._values.get(name, default)
        if value not in allowed:
            expected = ", ".join(f"'{a}'" for a in allowed)
            raise _QueryError([issue("enum", ["query", name], f"Input should be {expected}", value,
                                     {"expected": expected})])
        return value


class SandboxApi:
    def __init__(
        self,
        store: AgentStore,
        config: SandboxConfig,
        api_keys: tuple[str, ...],
        restricted_api_keys: tuple[str, ...],
    ) -> None:
        self.store = store
        self.config = config
        self._api_keys = frozenset(api_keys)
        self._restricted_keys = frozenset(restricted_api_keys)
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._in_flight = 0
        self._peak_in_flight = 0
        self._peak_attempted = 0  # in flight including the requests refused with 429
        self._accepted_times: deque[float] = deque()  # arrivals inside the current rate window
        self._status_counts: Counter[str] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=_REQUEST_LOG_SIZE)

    # ---- entry point --------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
               client_ip: str) -> Reply:
        if path.startswith("/_sandbox/"):
            return self._admin(method, path, body, client_ip)
        arrived = time.monotonic()
        request_id = uuid.uuid4().hex
        reply = DROP
        with self._lock:
            self._in_flight += 1
            self._peak_attempted = max(self._peak_attempted, self._in_flight)
            in_flight_seen = self._in_flight
            limited = self._limit_reply(arrived, request_id)
            if limited is None:
                self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            if limited is not None:
                reply = limited
            else:
                if self.config.latency > 0:
                    time.sleep(self.config.latency)
                reply = self._authorised(method, path, _Query(query), headers, body, request_id)
            if reply is not DROP:
                reply.headers.setdefault("x-trace-id", request_id)
                self._announce(reply, in_flight_seen)
            return reply
        finally:
            # Released before the transport writes the answer, so a client that starts its next
            # request as soon as it reads this one never finds us still counting the old one.
            with self._lock:
                self._in_flight -= 1
                status = reply.status or None
                self._status_counts[str(status) if status else "dropped"] += 1
                self._log.append(RequestRecord(arrived, method, path, status))

    # ---- limits and faults --------------------------------------------------------------

    def _limit_reply(self, now: float, request_id: str) -> Reply | None:
        """Called with the lock held. A 429 reply, or None when the request may proceed."""
        cfg = self.config
        if cfg.max_concurrent is not None and self._in_flight > cfg.max_concurrent:
            reply = _error(429, "rate_limit_error", "concurrent_limit_exceeded",
                           CONCURRENCY_MESSAGE.format(n=cfg.max_concurrent), request_id,
                           legacy_status="too_many_concurrent_requests")
            if cfg.retry_after:
                reply.headers["Retry-After"] = "1"
            return reply
        if cfg.rate_limit is not None:
            while self._accepted_times and self._accepted_times[0] <= now - 1.0:
                self._accepted_times.popleft()
            if len(self._accepted_times) >= cfg.rate_limit:
                reply = _error(429, "rate_limit_error", "rate_limit_exceeded",
                               RATE_MESSAGE.format(n=f"{cfg.rate_limit:g}"), request_id)
                if cfg.retry_after:
                    wait = self._accepted_times[0] + 1.0 - now
                    reply.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return reply
            self._accepted_times.append(now)
        return None

    def _announce(self, reply: Reply, in_flight: int) -> None:
        if self.config.max_concurrent is not None and self.config.announce_limit in ("header", "both"):
            reply.headers["current-concurrent-requests"] = str(in_flight)
            reply.headers["maximum-concurrent-requests"] = str(self.config.max_concurrent)

    def _user(self) -> Reply:
        user = dict(data.USER)
        announce = self.config.announce_limit
        if announce in ("user", "both") and self.config.max_concurrent is not None:
            user["subscription_extras"] = {**data.USER["subscription_extras"], "concurrency": self.config.max_concurrent}
        elif announce in ("header", "none"):
            del user["subscription_extras"]
        return Reply(200, user)

    def _roll(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def _server_error(self, request_id: str) -> Reply:
        with self._lock:
            unavailable = self._rng.random() < 0.5
        if unavailable:
            return _error(503, "service_unavailable", "service_unavailable",
                          "The service is temporarily unavailable. Please retry.", request_id)
        return _error(500, "internal_error", "internal_error", "An internal error occurred.", request_id)

    # ---- auth and routing ---------------------------------------------------------------

    def _authorised(self, method: str, path: str, query: _Query, headers: dict[str, str], body: bytes,
                    request_id: str) -> Reply:
        key = headers.get("xi-api-key")
        if not key:
            return _error(401, "authentication_error", "unauthorized",
                          "Neither authorization header nor xi-api-key received, please provide one.",
                          request_id, legacy_status="needs_authorization")
        if key in self._restricted_keys and path.startswith("/v1/convai/"):
            permission = "convai_read" if method == "GET" else "convai_write"
            return _error(401, "authorization_error", "missing_permissions",
                          f"The API key you used is missing the permission {permission} to execute this operation.",
                          request_id)
        if key not in self._api_keys and key not in self._restricted_keys:
            return _error(401, "authentication_error", "unauthorized", "Invalid API key", request_id,
                          legacy_status="invalid_api_key")
        if self._roll(self.config.error_rate):
            return self._server_error(request_id)
        if self._roll(self.config.system_busy_rate):
            return _error(429, "rate_limit_error", "system_busy", BUSY_MESSAGE, request_id)
        try:
            return self._route(method, path, query, body, request_id)
        except _QueryError as exc:
            return _unprocessable(exc.issues)

    def _route(self, method: str, path: str, query: _Query, body: bytes, request_id: str) -> Reply:
        parts = [p for p in path.split("/") if p]
        routes: dict[tuple[str, ...], dict[str, Callable[[], Reply]]] = {
            ("v1", "convai", "agents", "create"): {"POST": lambda: self._create(body, request_id)},
            ("v1", "convai", "agents"): {"GET": lambda: self._search_fault(query, request_id) or self._list(query)},
            ("v1", "voices"): {"GET": lambda: self._voices(query)},
            ("v1", "user"): {"GET": self._user},
            ("v1", "user", "subscription"): {"GET": lambda: Reply(200, data.SUBSCRIPTION)},
            ("v1", "models"): {"GET": lambda: Reply(200, data.MODELS)},
        }
        if len(parts) == 4 and parts[:3] == ["v1", "convai", "agents"] and parts[3] != "create":
            agent_id = parts[3]
            routes[tuple(parts)] = {
                "GET": lambda: self._get(agent_id, request_id),
                "PATCH": lambda: self._patch(agent_id, body, request_id),
                "DELETE": lambda: self._delete(agent_id, request_id),
            }
        elif len(parts) == 5 and parts[:3] == ["v1", "convai", "agents"] and parts[4] == "duplicate":
            routes[tuple(parts)] = {"POST": lambda: self._duplicate(parts[3], body, request_id)}
        elif len(parts) == 3 and parts[:2] == ["v1", "voices"]:
            routes[tuple(parts)] = {"GET": lambda: self._voice(parts[2], request_id)}
        handlers = routes.get(tuple(parts))
        if handlers is None:
            return Reply(404, {"detail": "Not Found"})
        handler = handlers.get(method)
        return handler() if handler else Reply(405, {"detail": "Method Not Allowed"})

    # ---- agents -------------------------------------------------------------------------

    @staticmethod
    def _json_body(body: bytes, *, required: bool) -> tuple[Any, Reply | None]:
        if not body.strip():
            if required:
                return None, _unprocessable([issue("missing", ["body"], "Field required", None)])
            return {}, None
        try:
            return json.loads(body), None
        except ValueError as exc:
            return None, _unprocessable([issue("json_invalid", ["body", 0], "JSON decode error", {},
                                               {"error": str(exc)})])

    @staticmethod
    def _not_found(agent_id: str, request_id: str) -> Reply:
        return _error(404, "not_found", "agent_not_found", f"Agent with id {agent_id} not found", request_id)

    def _create(self, body: bytes, request_id: str) -> Reply:
        payload, problem = self._json_body(body, required=True)
        if problem:
            return problem
        issues = validate_agent_body(payload, None)
        if issues:
            return _unprocessable(issues)
        agent = self._new_agent(payload)
        self.store.put(agent)
        if self._roll(self.config.drop_after_create_rate):
            return DROP
        if self._roll(self.config.error_after_create_rate):
            return _error(500, "internal_error", "internal_error", "An internal error occurred.", request_id)
        return Reply(200, {"agent_id": agent["agent_id"]})

    def create_directly(self, payload: dict[str, Any]) -> str:
        """Create as the dashboard would: validated, no limits, no faults."""
        issues = validate_agent_body(payload, None)
        if issues:
            raise ValueError(f"invalid agent payload: {issues}")
        agent = self._new_agent(payload)
        self.store.put(agent)
        return agent["agent_id"]

    @staticmethod
    def _new_agent(payload: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        return {
            "agent_id": _new_agent_id(),
            "name": payload.get("name") or "",
            "conversation_config": deep_merge(data.CONVERSATION_CONFIG_DEFAULTS,
                                              payload.get("conversation_config") or {}),
            "platform_settings": deep_merge(data.PLATFORM_SETTINGS_DEFAULTS, payload.get("platform_settings") or {}),
            "workflow": payload.get("workflow"),
            "metadata": {"created_at_unix_secs": now, "updated_at_unix_secs": now},
            "tags": list(payload.get("tags") or []),
            "access_info": dict(data.ACCESS_INFO),
            "phone_numbers": [],
            "whatsapp_accounts": [],
            "version_id": None,
            "branch_id": None,
            "main_branch_id": None,
        }

    def _get(self, agent_id: str, request_id: str) -> Reply:
        agent = self.store.get(agent_id)
        return Reply(200, agent) if agent else self._not_found(agent_id, request_id)

    def _patch(self, agent_id: str, body: bytes, request_id: str) -> Reply:
        patch, problem = self._json_body(body, required=False)
        if problem:
            return problem
        agent = self.store.get(agent_id)
        if agent is None:
            return self._not_found(agent_id, request_id)
        issues = validate_agent_body(patch, agent["conversation_config"])
        if issues:
            return _unprocessable(issues)
        for key in ("conversation_config", "platform_settings"):
            if patch.get(key) is not None:
                agent[key] = deep_merge(agent[key], patch[key])
        for key in ("name", "tags", "workflow"):
            if patch.get(key) is not None:
                agent[key] = patch[key]
        agent["metadata"]["updated_at_unix_secs"] = int(time.time())
        self.store.put(agent)
        return Reply(200, agent)

    def _delete(self, agent_id: str, request_id: str) -> Reply:
        deleted = self.store.delete(agent_id)
        if self._roll(self.config.drop_delete_response_rate):
            return DROP  # done (or nothing to do), but the client never hears which
        return Reply(204) if deleted else self._not_found(agent_id, request_id)

    def _duplicate(self, agent_id: str, body: bytes, request_id: str) -> Reply:
        options, problem = self._json_body(body, required=False)
        if problem:
            return problem
        source = self.store.get(agent_id)
        if source is None:
            return self._not_found(agent_id, request_id)
        now = int(time.time())
        copy_ = dict(source, agent_id=_new_agent_id(), metadata={"created_at_unix_secs": now,
                                                                   "updated_at_unix_secs": now})
        if isinstance(options, dict) and options.get("name"):
            copy_["name"] = options["name"]
        self.store.put(copy_)
        return Reply(200, {"agent_id": copy_["agent_id"]})

    def _search_fault(self, query: _Query, request_id: str) -> Reply | None:
        """The configured failure of an adoption search, or None to answer it normally."""
        fault = self.config.search_fault
        if not fault or not query.text("search") or not self._roll(self.config.search_fault_rate):
            return None
        if fault == "timeout":
            time.sleep(self.config.search_timeout_seconds)
            return None
        if fault == "non_json":
            return Reply(200, RAW_BODY_PREFIX + "<html><body>502 Bad Gateway</body></html>")
        status = int(fault)
        if status == 401:
            return _error(401, "authentication_error", "unauthorized", "Invalid API key", request_id,
                          legacy_status="invalid_api_key")
        reply = _error(status, "rate_limit_error" if status == 429 else "invalid_request", f"search_fault_{status}",
                       "Injected search failure.", request_id)
        if status == 429:
            reply.headers["Retry-After"] = "0"
        return reply

    def _list(self, query: _Query) -> Reply:
        page_size = query.integer("page_size", 30, 1, 100)
        archived = query.boolean("archived", False)
        sort_by = query.choice("sort_by", "created_at", ("name", "created_at", "call_count_7d"))
        direction = query.choice("sort_direction", "desc", ("asc", "desc"))
        cursor_text = query.text("cursor")
        after = decode_cursor(cursor_text) if cursor_text else None
        if cursor_text and after is None:
            raise _QueryError([issue("value_error", ["query", "cursor"], "Value error, invalid cursor",
                                     cursor_text, {"error": {}})])
        agents, next_cursor = self.store.page(search=query.text("search"), archived=archived, sort_by=sort_by,
                                              descending=direction == "desc", page_size=page_size, after=after)
        summaries = [{
            "agent_id": a["agent_id"], "name": a["name"], "tags": a["tags"],
            "created_at_unix_secs": a["metadata"]["created_at_unix_secs"], "access_info": a["access_info"],
            "last_call_time_unix_secs": None, "archived": bool(a["platform_settings"].get("archived")),
        } for a in agents]
        return Reply(200, {"agents": summaries, "next_cursor": next_cursor, "has_more": next_cursor is not None})

    # ---- voices -------------------------------------------------------------------------

    def _voices(self, query: _Query) -> Reply:
        show_legacy = query.boolean("show_legacy", False)
        voices = [v for v in data.VOICES if show_legacy or not v["is_legacy"]]
        return Reply(200, {"voices": voices})

    def _voice(self, voice_id: str, request_id: str) -> Reply:
        for voice in data.VOICES:
            if voice["voice_id"] == voice_id:
                return Reply(200, voice)
        return _error(404, "not_found", "voice_not_found", f"A voice with the voice_id {voice_id} was not found.",
                      request_id)

    # ---- test conveniences --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            log = list(self._log)
            counts = dict(self._status_counts)
            peak = self._peak_in_flight
            attempted = self._peak_attempted
        return {
            "requests_total": len(log),
            "requests_by_status": counts,
            "rate_limited": counts.get("429", 0),
            "dropped": counts.get("dropped", 0),
            "agents": self.store.count(),
            "peak_concurrency": peak,
            "peak_attempted_concurrency": attempted,
            "max_requests_in_1s_window": _max_in_window([r.arrived for r in log]),
        }

    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(SandboxConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in changes.items():
                setattr(self.config, name, value)
            if "seed" in changes:
                self._rng = random.Random(changes["seed"])

    def _admin(self, method: str, path: str, body: bytes, client_ip: str) -> Reply:
        if client_ip not in _LOOPBACK:
            return Reply(403, {"detail": "sandbox admin endpoints answer loopback clients only"})
        if (method, path) == ("GET", "/_sandbox/stats"):
            return Reply(200, self.stats())
        if (method, path) == ("DELETE", "/_sandbox/agents"):
            return Reply(200, {"deleted": self.store.wipe()})
        if (method, path) == ("POST", "/_sandbox/config"):
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.reconfigure(changes)
            except ValueError as exc:
                return Reply(400, {"detail": str(exc)})
            return Reply(200, asdict(self.config))
        return Reply(404, {"detail": "Not Found"})
