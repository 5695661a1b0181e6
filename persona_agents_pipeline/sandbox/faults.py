"""What the sandbox can be told to do wrong, as the real API does under load: limits and
faults (`SandboxConfig`, changeable at runtime), the seeded dice that decide when a fault strikes, and the
answers of the faults that are not tied to one endpoint."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .protocol import RAW_BODY_PREFIX, Reply, error_reply, internal_error_reply, invalid_key_reply


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
    # A create carried out at once but answered only after this many seconds (a slow create).
    create_answer_delay_seconds: float = 0.0
    # Fraction of creates that create an agent but answer with the id the previous create was answered
    # with, as a proxy replaying a cached answer would.
    replay_create_answer_rate: float = 0.0
    # Eventually consistent listing: a created agent shows in list and search results only this many
    # seconds, and this many list calls, after its create.
    listing_lag_seconds: float = 0.0
    listing_lag_lists: int = 0
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
    # Every API request is answered redirect_status (301, 302, 303, 307 or 308) with the Location
    # redirect_to + MOVED_PREFIX + its path and query; the sandbox serves paths under MOVED_PREFIX as usual,
    # so a redirect_to naming the sandbox itself makes a redirect within one origin.
    redirect_status: int | None = None
    redirect_to: str | None = None
    # Answers are written one byte every drip_interval seconds (only to drip_method requests, when set).
    drip_interval: float = 0.0
    drip_method: str | None = None
    # Items of unexpected shape added to the first page of every agent list (searches included).
    malformed_list_items: list[Any] = field(default_factory=list)
    # How agent list pages after the first (requests with a cursor) fail, as a listing cut off midway:
    # "500" (an internal error) or "malformed" (a page without has_more).
    list_page_fault: str | None = None
    seed: int | None = None


class Dice:
    """One seeded random source for every fault, shared by the request threads (a seed replays a run)."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def roll(self, probability: float) -> bool:
        """True with the given probability (never, without drawing, at 0)."""
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability


MOVED_PREFIX = "/moved"


def redirect_reply(config: SandboxConfig, path: str, query: str) -> Reply | None:
    """The configured redirect of an API request, or None to answer it here."""
    if not config.redirect_status or not config.redirect_to:
        return None
    location = config.redirect_to.rstrip("/") + MOVED_PREFIX + path + (f"?{query}" if query else "")
    return Reply(config.redirect_status, {"detail": "moved"}, {"Location": location})


def server_error_reply(dice: Dice, request_id: str) -> Reply:
    """A 503 or a 500, evenly."""
    if dice.roll(0.5):
        return error_reply(503, "service_unavailable", "service_unavailable",
                           "The service is temporarily unavailable. Please retry.", request_id)
    return internal_error_reply(request_id)


def list_page_fault_reply(config: SandboxConfig, cursor: str | None, request_id: str) -> Reply | None:
    """The configured failure of a later page of an agent list, or None to answer it normally."""
    if not config.list_page_fault or not cursor:
        return None
    if config.list_page_fault == "malformed":
        return Reply(200, {"agents": [], "next_cursor": None})
    return internal_error_reply(request_id)


def search_fault_reply(config: SandboxConfig, dice: Dice, search: str | None, request_id: str) -> Reply | None:
    """The configured failure of an adoption search, or None to answer it normally."""
    fault = config.search_fault
    if not fault or not search or not dice.roll(config.search_fault_rate):
        return None
    if fault == "timeout":
        time.sleep(config.search_timeout_seconds)
        return None
    if fault == "non_json":
        return Reply(200, RAW_BODY_PREFIX + "<html><body>502 Bad Gateway</body></html>")
    status = int(fault)
    if status == 401:
        return invalid_key_reply(request_id)
    reply = error_reply(status, "rate_limit_error" if status == 429 else "invalid_request", f"search_fault_{status}",
                        "Injected search failure.", request_id)
    if status == 429:
        reply.headers["Retry-After"] = "0"
    return reply


class ListingLag:
    """Eventually consistent listing: which created agents list and search results do not show yet."""

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._lists = 0
        self._pending: dict[str, tuple[float, int]] = {}  # agent id -> (shown from, shown after list number)

    def created(self, agent_id: str) -> None:
        seconds, lists = self._config.listing_lag_seconds, self._config.listing_lag_lists
        if seconds <= 0 and lists <= 0:
            return
        with self._lock:
            self._pending[agent_id] = (time.monotonic() + seconds, self._lists + lists)

    def hidden(self) -> set[str]:
        """Called once per list call: the agents it leaves out."""
        now = time.monotonic()
        with self._lock:
            self._lists += 1
            self._pending = {agent_id: (shown_from, after) for agent_id, (shown_from, after) in self._pending.items()
                             if shown_from > now or after >= self._lists}
            return set(self._pending)
