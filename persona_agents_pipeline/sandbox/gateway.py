"""The sandbox's request handling in front of the endpoints, independent of HTTP transport.

`SandboxGateway.handle` takes one parsed request and returns a `Reply` (or `DROP`, meaning "close the
connection without answering"). Limits and faults are applied here, in this order: concurrency limit,
rate limit, latency, auth, random 5xx, then the route itself. It also keeps the
counts and the request log that tests and benchmarks read, and serves the loopback-only `/_sandbox/` admin.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from . import data
from .agent_store import AgentStore
from .endpoints import Endpoints
from .faults import (
    MOVED_PREFIX, Dice, SandboxConfig, list_page_fault_reply, redirect_reply, search_fault_reply, server_error_reply,
)
from .protocol import DROP, Query, QueryError, Reply, error_reply, invalid_key_reply, unprocessable

CONCURRENCY_MESSAGE = (
    "Too many concurrent requests. Your current subscription is associated with a maximum of {n} concurrent "
    "requests (running in parallel). This is done such that a single user does not overwhelm our systems and "
    "affect other users negatively. Please upgrade your subscription or contact sales if you want to increase "
    "this limit."
)
BUSY_MESSAGE = ("Our services are experiencing high levels of traffic and your request could not be processed. "
                "Retry the request with exponential backoff.")
RATE_MESSAGE = "Too many requests. You have exceeded the rate limit of {n} requests per second; retry with backoff."
_REQUEST_LOG_SIZE = 100_000
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_AGENTS = ("v1", "convai", "agents")


@dataclass(frozen=True)
class RequestRecord:
    arrived: float  # time.monotonic() when the request was read
    method: str
    path: str
    status: int | None  # None: connection dropped without an answer


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class SandboxGateway:
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
        self._dice = Dice(config.seed)
        self.endpoints = Endpoints(store, config, self._dice)
        self._lock = threading.Lock()
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
        moved = path.startswith(MOVED_PREFIX + "/")  # the second leg of a redirect: served, not redirected again
        path = path.removeprefix(MOVED_PREFIX) if moved else path
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
                reply = (None if moved else redirect_reply(self.config, path, query)) or self._authorised(
                    method, path, Query(query), headers, body, request_id)
            if reply is not DROP:
                reply.headers.setdefault("x-trace-id", request_id)
                self._announce(reply, in_flight_seen)
                if self.config.drip_interval > 0 and self.config.drip_method in (None, method):
                    reply.drip_interval = self.config.drip_interval
                    reply.after_written = lambda: self._finished(arrived, method, path, reply)
            return reply
        finally:
            if not reply.after_written:
                self._finished(arrived, method, path, reply)

    def _finished(self, arrived: float, method: str, path: str, reply: Reply) -> None:
        """Stops counting the request: before the transport writes an ordinary answer, so a client that starts
        its next request as soon as it reads this one never finds us still counting the old one; after it
        wrote a dripped one, which keeps the request in flight all along."""
        with self._lock:
            self._in_flight -= 1
            status = reply.status or None
            self._status_counts[str(status) if status else "dropped"] += 1
            self._log.append(RequestRecord(arrived, method, path, status))

    # ---- limits -------------------------------------------------------------------------

    def _limit_reply(self, now: float, request_id: str) -> Reply | None:
        """Called with the lock held. A 429 reply, or None when the request may proceed."""
        cfg = self.config
        if cfg.max_concurrent is not None and self._in_flight > cfg.max_concurrent:
            reply = error_reply(429, "rate_limit_error", "concurrent_limit_exceeded",
                                CONCURRENCY_MESSAGE.format(n=cfg.max_concurrent), request_id,
                                legacy_status="too_many_concurrent_requests")
            if cfg.retry_after:
                reply.headers["Retry-After"] = "1"
            return reply
        if cfg.rate_limit is not None:
            while self._accepted_times and self._accepted_times[0] <= now - 1.0:
                self._accepted_times.popleft()
            if len(self._accepted_times) >= cfg.rate_limit:
                reply = error_reply(429, "rate_limit_error", "rate_limit_exceeded",
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

    # ---- auth and routing ---------------------------------------------------------------

    def _authorised(self, method: str, path: str, query: Query, headers: dict[str, str], body: bytes,
                    request_id: str) -> Reply:
        key = headers.get("xi-api-key")
        if not key:
            return error_reply(401, "authentication_error", "unauthorized",
                               "Neither authorization header nor xi-api-key received, please provide one.",
                               request_id, legacy_status="needs_authorization")
        if key in self._restricted_keys and path.startswith("/v1/convai/"):
            permission = "convai_read" if method == "GET" else "convai_write"
            return error_reply(401, "authorization_error", "missing_permissions",
                               f"The API key you used is missing the permission {permission} to execute this operation.",
                               request_id)
        if key not in self._api_keys and key not in self._restricted_keys:
            return invalid_key_reply(request_id)
        if self._dice.roll(self.config.error_rate):
            return server_error_reply(self._dice, request_id)
        if self._dice.roll(self.config.system_busy_rate):
            return error_reply(429, "rate_limit_error", "system_busy", BUSY_MESSAGE, request_id)
        try:
            return self._route(method, path, query, body, request_id)
        except QueryError as exc:
            return unprocessable(exc.issues)

    def _route(self, method: str, path: str, query: Query, body: bytes, request_id: str) -> Reply:
        parts = tuple(p for p in path.split("/") if p)
        endpoints = self.endpoints
        routes: dict[tuple[str, ...], dict[str, Callable[[], Reply]]] = {
            (*_AGENTS, "create"): {"POST": lambda: endpoints.create(body, request_id)},
            _AGENTS: {"GET": lambda: self._list_fault(query, request_id) or endpoints.list(query)},
            ("v1", "voices"): {"GET": lambda: endpoints.voices(query)},
            ("v1", "user"): {"GET": self._user},
            ("v1", "user", "subscription"): {"GET": lambda: Reply(200, data.SUBSCRIPTION)},
            ("v1", "models"): {"GET": lambda: Reply(200, data.MODELS)},
        }
        if len(parts) == 4 and parts[:3] == _AGENTS and parts[3] != "create":
            agent_id = parts[3]
            routes[parts] = {
                "GET": lambda: endpoints.get(agent_id, request_id),
                "PATCH": lambda: endpoints.patch(agent_id, body, request_id),
                "DELETE": lambda: endpoints.delete(agent_id, request_id),
            }
        elif len(parts) == 5 and parts[:3] == _AGENTS and parts[4] == "duplicate":
            routes[parts] = {"POST": lambda: endpoints.duplicate(parts[3], body, request_id)}
        elif len(parts) == 3 and parts[:2] == ("v1", "voices"):
            routes[parts] = {"GET": lambda: endpoints.voice(parts[2], request_id)}
        handlers = routes.get(parts)
        if handlers is None:
            return Reply(404, {"detail": "Not Found"})
        handler = handlers.get(method)
        return handler() if handler else Reply(405, {"detail": "Method Not Allowed"})

    def _list_fault(self, query: Query, request_id: str) -> Reply | None:
        return search_fault_reply(self.config, self._dice, query.text("search"), request_id) or list_page_fault_reply(
            self.config, query.text("cursor"), request_id
        )

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
            self._dice.reseed(changes["seed"])

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
