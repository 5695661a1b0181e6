"""HTTP client for the ElevenLabs agents API.

Retry policy, and why:

* GET, PATCH (same body) and DELETE are idempotent: 429, 5xx, timeouts and
  connection errors are retried with exponential backoff and full jitter,
  honouring Retry-After (capped at 60 s).
* The 429s differ: `too_many_concurrent_requests` / `concurrent_limit_exceeded` means the account
  has too many requests in flight: wait briefly, retry, and tell the budget to use fewer slots;
  `rate_limit_exceeded` means too many starts per second: tell the budget to start fewer, and pause every
  caller for its Retry-After; `system_busy` means ElevenLabs is overloaded: every caller pauses with
  exponential backoff.
* POST create is not idempotent: a retry after the request may have reached
  the server can create a duplicate agent (as the official SDK's retries do). Only failures that
  prove nothing was created are retried: 429, and connections that were never
  made. Everything else is raised; `error.ambiguous` tells the caller to look
  for the agent before creating it again.
* Every exchange has a total deadline inside the budget slot's lease, and redirects are followed only
  within the configured origin (transport.py).

The API key never appears in logs, exception text or reprs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import requests

from ..config import DEFAULT_BASE_URL, clean_api_key, validate_base_url
from .errors import (
    ApiConnectionError,
    AuthenticationError,
    ElevenLabsError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RedirectRefusedError,
    ServerError,
    error_from_response,
)
from .budget import PLAN_CONCURRENCY, SharedBudget
from .listing import SkippedAgent, skipped_summary
from .rate_limit import RequestLimiter
from .transport import (
    MAX_REDIRECTS,
    DeadlineWatch,
    new_session,
    next_location,
    redirect_refusal,
    request_deadline,
    transport_error,
)

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
# Connect, send and the whole answer of one exchange; shortened to fit inside the budget's lease.
DEFAULT_DEADLINE = 35.0
MAX_RETRY_AFTER = 60.0
CONCURRENCY_CODES = frozenset({"concurrent_limit_exceeded", "too_many_concurrent_requests"})
RATE_CODE = "rate_limit_exceeded"
SYSTEM_BUSY = "system_busy"
LIMIT_HEADER = "maximum-concurrent-requests"
NO_KEY_MESSAGE = (
    "No ElevenLabs API key: set ELEVENLABS_API_KEY or the credentials file, or give the client a key "
    "(the sandbox accepts 'sandbox-test-key')"
)

logger = logging.getLogger("persona_agents_pipeline.elevenlabs")


@dataclass(frozen=True)
class ConnectionProblem:
    problem: str
    what_to_do: str


@dataclass
class ConnectionReport:
    base_url: str
    reachable: bool | None = None  # None: not checked (no key)
    authenticated: bool = False
    can_read_agents: bool = False
    voices_found: dict[str, str] = field(default_factory=dict)
    voices_missing: dict[str, str] = field(default_factory=dict)
    problems: list[ConnectionProblem] = field(default_factory=list)
    # Usable today but worth acting on (e.g. legacy voices due for retirement); they do not fail `ok`.
    warnings: list[ConnectionProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ElevenLabsClient:
    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        limiter: RequestLimiter | SharedBudget | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        # Checked here, where every caller (CLI, Python API, Dagster resource) passes through, so a
        # damaged key never reaches `requests`, whose header errors quote the value.
        self._api_key = clean_api_key(api_key)
        self.base_url = validate_base_url(base_url, "the ElevenLabs base URL")
        self.timeout = timeout
        self.deadline = request_deadline(deadline, getattr(limiter, "lease_seconds", None))
        self.limiter = limiter
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._discovery_lock = threading.Lock()
        self._discovered = False
        pool_size = max(10, limiter.max_concurrent or 0) if limiter else 10
        self._session = new_session(pool_size)

    def __repr__(self) -> str:
        return f"ElevenLabsClient(base_url={self.base_url!r}, api_key=***)"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ElevenLabsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- agents -------------------------------------------------------------------------

    def create_agent(self, payload: dict[str, Any]) -> str:
        body = self._request("POST", "/v1/convai/agents/create", json=payload, idempotent=False)
        agent_id = body.get("agent_id") if isinstance(body, dict) else None
        if not isinstance(agent_id, str) or not agent_id:
            raise MalformedResponseError("create answered without an agent_id", during_create=True)
        return agent_id

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return self._agent_body(self._request("GET", f"/v1/convai/agents/{agent_id}"))

    def update_agent(self, agent_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._agent_body(self._request("PATCH", f"/v1/convai/agents/{agent_id}", json=patch))

    def delete_agent(self, agent_id: str) -> None:
        self._request("DELETE", f"/v1/convai/agents/{agent_id}", expect_json=False)

    def list_agents(
        self, search: str | None = None, page_size: int = 100, *,
        on_skipped: Callable[[SkippedAgent], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every listed agent of a usable shape; the others go to `on_skipped` (by default: a warning)."""
        params: dict[str, Any] = {"page_size": page_size}
        if search:
            params["search"] = search
        seen_cursors: set[str] = set()
        while True:
            page = self._request("GET", "/v1/convai/agents", params=params)
            agents = page.get("agents") if isinstance(page, dict) else None
            if not isinstance(agents, list) or not isinstance(page.get("has_more"), bool):
                raise MalformedResponseError("agent list lacks 'agents' or 'has_more'")
            for agent in agents:
                skipped = skipped_summary(agent)
                if skipped is None:
                    yield agent
                elif on_skipped is not None:
                    on_skipped(skipped)
                else:
                    logger.warning("skipped an agent of unexpected shape in the agent list: %s", skipped)
            cursor = page.get("next_cursor")
            if not page["has_more"]:
                return
            # Guard against a server that would make us loop forever.
            if not isinstance(cursor, str) or not cursor or cursor in seen_cursors:
                raise MalformedResponseError("agent list has_more=true without a new next_cursor")
            seen_cursors.add(cursor)
            params["cursor"] = cursor

    # ---- voices -------------------------------------------------------------------------

    def list_voices(self, show_legacy: bool = True) -> list[dict[str, Any]]:
        params = {"show_legacy": "true" if show_legacy else "false"}
        body = self._request("GET", "/v1/voices", params=params)
        voices = body.get("voices") if isinstance(body, dict) else None
        if not isinstance(voices, list):
            raise MalformedResponseError("voice list lacks 'voices'")
        return voices

    def get_voice(self, voice_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/v1/voices/{voice_id}")
        if not isinstance(body, dict) or not body.get("voice_id"):
            raise MalformedResponseError("voice answer lacks 'voice_id'")
        return body

    # ---- the account's limits -----------------------------------------------------------

    def discover_limits(self) -> None:
        """Tell the limiter the account's concurrency: `subscription_extras.concurrency` from GET /v1/user,
        else the plan's documented figure. Headers, when the API sends them, overrule both later."""
        with self._discovery_lock:
            if self._discovered:
                return
            self._discovered = True  # first, so the GET below does not discover again
            try:
                user = self._request("GET", "/v1/user")
            except ElevenLabsError as exc:
                # A key without user_read: configuration (or the safe default) stays in force.
                logger.info("could not read the account's limits from GET /v1/user: %s", exc)
                return
        if not isinstance(user, dict) or self.limiter is None:
            return
        concurrency = (user.get("subscription_extras") or {}).get("concurrency")
        if isinstance(concurrency, int) and concurrency > 0:
            self.limiter.observe_limit(concurrency, "account")
            return
        tier = str((user.get("subscription") or {}).get("tier") or "").lower()
        if tier in PLAN_CONCURRENCY:
            self.limiter.observe_limit(PLAN_CONCURRENCY[tier], "plan")

    # ---- connection check ---------------------------------------------------------------

    def test_connection(self, voice_ids: dict[str, str]) -> ConnectionReport:
        """Check reachability, the key, agent read permission and that each voice exists."""
        report = ConnectionReport(base_url=self.base_url)
        try:
            self._request("GET", "/v1/convai/agents", params={"page_size": 1})
        except ApiConnectionError as exc:
            report.reachable = False
            report.problems.append(ConnectionProblem(
                f"Cannot reach {self.base_url}: {exc}",
                "Check the network, proxy settings and the configured base URL.",
            ))
            return report
        except AuthenticationError as exc:
            report.reachable = None if self._api_key is None else True
            fix = ("Top up the account or raise the key's credit quota."
                   if exc.code == "quota_exceeded" else
                   "Set ELEVENLABS_API_KEY to a valid key (ElevenLabs dashboard -> API keys).")
            report.problems.append(ConnectionProblem(f"API key rejected: {exc}", fix))
            return report
        except PermissionDeniedError as exc:
            report.reachable = report.authenticated = True
            report.problems.append(ConnectionProblem(
                f"The key cannot read agents: {exc}",
                "Give the key the ElevenAgents permissions convai_read and convai_write, or use an unrestricted key.",
            ))
        except ElevenLabsError as exc:
            report.reachable = True
            fix = ("Set ELEVENLABS_BASE_URL to the API's own address (https://api.elevenlabs.io or your region's)."
                   if isinstance(exc, RedirectRefusedError) else "Retry later; check status.elevenlabs.io if it persists.")
            report.problems.append(ConnectionProblem(f"Listing agents failed: {exc}", fix))
            return report
        else:
            report.reachable = report.authenticated = report.can_read_agents = True
        self._check_voices(voice_ids, report)
        return report

    def _check_voices(self, voice_ids: dict[str, str], report: ConnectionReport) -> None:
        if not voice_ids:
            return
        try:
            listed = {v.get("voice_id"): v for v in self.list_voices(show_legacy=True)}
        except ElevenLabsError as exc:
            listed = {}
            report.problems.append(ConnectionProblem(
                f"Listing voices failed: {exc}", "Give the key the voices_read permission."
            ))
        for name, voice_id in voice_ids.items():
            voice = listed.get(voice_id)
            if voice is None:
                try:
                    voice = self.get_voice(voice_id)
                except NotFoundError:
                    report.voices_missing[name] = voice_id
                    report.problems.append(ConnectionProblem(
                        f"Voice {name!r} ({voice_id}) does not exist for this account",
                        "Pick a current voice id from the ElevenLabs voice library and update the voice policy.",
                    ))
                    continue
                except ElevenLabsError as exc:
                    report.voices_missing[name] = voice_id
                    report.problems.append(ConnectionProblem(
                        f"Could not check voice {name!r} ({voice_id}): {exc}", "Retry; check voices_read permission."
                    ))
                    continue
            report.voices_found[name] = voice_id
            if voice.get("is_legacy"):
                report.warnings.append(ConnectionProblem(
                    f"Voice {name!r} ({voice_id}) is a legacy voice scheduled for retirement",
                    "Move this persona to a current default voice.",
                ))

    # ---- transport ----------------------------------------------------------------------

    @staticmethod
    def _agent_body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("agent_id") or "conversation_config" not in body:
            raise MalformedResponseError("agent answer lacks 'agent_id' or 'conversation_config'")
        return body

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0.0, self._backoff_ceiling(attempt))

    def _send_once(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP exchange; transport failures become ApiConnectionError/ApiTimeoutError."""
        started = time.monotonic()
        limiter_slot = self.limiter.slot() if self.limiter else nullcontext()
        failure: ApiConnectionError | None = None
        watch = DeadlineWatch(self.deadline)
        try:
            with limiter_slot, watch:
                response = self._exchange(method, path, **kwargs)
        except requests.exceptions.RequestException as exc:
            logger.debug("%s %s -> %s after %.3fs", method, path, type(exc).__name__, time.monotonic() - started)
            failure = transport_error(f"{method} {path}", exc, self.base_url, self.deadline if watch.expired else None)
        if failure is not None:
            # Raised outside the `except`, so nothing is chained: some transport errors (e.g. requests'
            # InvalidHeader) quote request headers, and chained errors end up in Dagster's event log.
            raise failure
        announced = response.headers.get(LIMIT_HEADER, "")
        if self.limiter and announced.strip().isdigit():
            self.limiter.observe_limit(int(announced), "header")
        logger.debug("%s %s -> %s in %.3fs", method, path, response.status_code, time.monotonic() - started)
        return response

    def _exchange(self, method: str, path: str, *, params: Any = None, json: Any = None) -> requests.Response:
        """The request and the redirects it may follow (same origin only; see transport.py)."""
        url = self.base_url + path
        for _ in range(MAX_REDIRECTS + 1):
            response = self._session.request(method, url, params=params, json=json, timeout=self.timeout,
                                             headers={"xi-api-key": self._api_key}, allow_redirects=False)
            if not 300 <= response.status_code < 400:
                return response
            target = next_location(response, url)
            response.close()
            refusal = redirect_refusal(method, response.status_code, target, self.base_url)
            if refusal is not None:
                raise RedirectRefusedError(f"{method} {path}: {refusal}", status_code=response.status_code)
            url, params = target, None  # the Location carries its own query
        raise RedirectRefusedError(f"{method} {path}: more than {MAX_REDIRECTS} redirects; not followed further")

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
        expect_json: bool = True,
    ) -> Any:
        if not self._api_key:
            raise AuthenticationError(NO_KEY_MESSAGE)
        if self.limiter and not self._discovered and self.limiter.wants_discovery():
            self.discover_limits()
        previous_ambiguous = False
        for attempt in range(1, self.max_attempts + 1):
            last_attempt = attempt == self.max_attempts
            try:
                response = self._send_once(method, path, params=params, json=json)
                if response.status_code >= 400:
                    raise error_from_response(
                        response.status_code, self._redact(response.text), response.headers
                    )
                if self.limiter:
                    self.limiter.succeeded()
                return self._decode(response, expect_json=expect_json, during_create=not idempotent)
            except NotFoundError:
                # A retried DELETE whose first try may have worked: the agent is gone, as asked.
                if method == "DELETE" and previous_ambiguous:
                    logger.info("%s %s -> 404 after an ambiguous attempt; treating as deleted", method, path)
                    return None
                raise
            except RateLimitedError as exc:
                if last_attempt:
                    raise
                delay = self._wait_after_429(exc, attempt)
            except (ServerError, ApiConnectionError) as exc:
                retryable = idempotent or (isinstance(exc, ApiConnectionError) and not exc.request_sent)
                if last_attempt or not retryable:
                    raise
                previous_ambiguous = previous_ambiguous or exc.ambiguous
                delay = self._backoff(attempt)
            logger.warning("%s %s: attempt %d/%d failed; retrying in %.2fs",
                           method, path, attempt, self.max_attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _wait_after_429(self, exc: RateLimitedError, attempt: int) -> float:
        if exc.code in CONCURRENCY_CODES:
            # Our slots are free again as soon as this request returns; only fewer of them may be used.
            if self.limiter:
                self.limiter.concurrency_exceeded()
            return min(exc.retry_after, MAX_RETRY_AFTER) if exc.retry_after is not None else self._backoff(1)
        if exc.code == RATE_CODE and self.limiter:
            self.limiter.rate_exceeded()
        if exc.retry_after is None and exc.code != SYSTEM_BUSY:
            return self._backoff(attempt)
        # system_busy, or a rate limit with Retry-After: every caller must back off, not only this one.
        delay = min(exc.retry_after if exc.retry_after is not None else self._backoff_ceiling(attempt), MAX_RETRY_AFTER)
        if self.limiter:
            self.limiter.pause(delay)
        return delay

    def _backoff_ceiling(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    @staticmethod
    def _decode(response: requests.Response, *, expect_json: bool, during_create: bool) -> Any:
        if not expect_json:
            return None
        try:
            return response.json()
        except ValueError:
            raise MalformedResponseError(
                f"{response.status_code} answer is not JSON: {response.text[:120]!r}",
                status_code=response.status_code, during_create=during_create,
            ) from None
