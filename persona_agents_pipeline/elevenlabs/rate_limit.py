"""Client-side request pacing shared by every thread of one process.

Only in use with PERSONA_AGENTS_BUDGET_URL=off (and by the benchmarks' reimplementation of the original
approach): normally every process draws on the account's shared budget (budget.py).

A server that counts requests in a sliding 1-second window and allows `rate`
of them must never see `rate + 1` inside any such window. A classic token
bucket cannot promise that: with capacity B it lets B + rate requests through
in one second. So `RequestLimiter` combines two rules:

* smooth spacing: consecutive requests start at least ``1 / rate`` apart
  (a token bucket of capacity 1, so there are no bursts);
* a sliding-window log: a request may start only if fewer than ``floor(rate)``
  requests started in the last ``window + margin`` seconds. The margin absorbs
  network jitter between our send time and the server's arrival time.

Throughput is therefore just under `rate` (``floor(rate) / (window + margin)``),
which is the price of never tripping the server's limit. The margin is 50 ms by
default (95% of `rate`); measured on loopback, a 100 ms margin cost 9% of the
throughput and bought nothing (benchmarks/).

When the server's real limit is lower than the configured one, every
`rate_limit_exceeded` 429 (`rate_exceeded()`) lowers the limiter's own rate
(`rate_after_429`: x0.9, at most once per window, never below a quarter of `rate`),
and each quiet `recovery_seconds` gives back 5% of `rate` (`rate_after_quiet`).
Without this a too-high setting meets a 429 and a full Retry-After pause every
second or so, halving throughput; with it the limiter settles just under the
server's limit and probes upwards now and then. The shared budget (budget.py)
adapts its ring of starts by the same two functions.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

RATE_QUIET_SECONDS_BEFORE_GROWTH = 30.0


def rate_after_429(rate: float, configured: float) -> float:
    """The rate after a `rate_limit_exceeded` 429: 10% less, never below a quarter of the configured rate."""
    return max(configured * 0.25, rate * 0.9)


def rate_after_quiet(rate: float, configured: float) -> float:
    """The rate after a quiet spell: 5% of the configured rate back, never above it."""
    return min(configured, rate + 0.05 * configured)


def starts_per_window(rate: float) -> int:
    """Whole starts a window may hold at `rate` (at least one; 10 * 0.9 is 9, not 8.999...)."""
    return max(1, math.floor(rate + 1e-9))


class RequestLimiter:
    """Token pacing plus a concurrency cap; `pause()` freezes every thread (429 Retry-After)."""

    def __init__(
        self,
        rate_per_second: float | None,
        max_concurrent: int | None,
        *,
        window_seconds: float = 1.0,
        jitter_margin_seconds: float = 0.05,
        recovery_seconds: float = RATE_QUIET_SECONDS_BEFORE_GROWTH,
    ) -> None:
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive or None")
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 or None")
        self.rate_per_second = rate_per_second
        self.max_concurrent = max_concurrent
        self._concurrency_ceiling = max_concurrent
        self._cond = threading.Condition()
        self._in_flight = 0
        self._paused_until = 0.0
        self._next_start = 0.0
        self._window = window_seconds + jitter_margin_seconds
        self._per_window = starts_per_window(rate_per_second) if rate_per_second else 0
        self._recent_starts: deque[float] = deque()
        # Adaptive rate after 429s: lowered by rate_exceeded(), raised back after quiet periods.
        self._effective_rate = rate_per_second
        self._recovery_seconds = recovery_seconds
        self._last_rate_change = -math.inf

    @property
    def effective_rate(self) -> float | None:
        """The rate currently applied: `rate_per_second`, or less after recent 429s."""
        return self._effective_rate

    def __repr__(self) -> str:
        return f"RequestLimiter(rate_per_second={self.rate_per_second}, max_concurrent={self.max_concurrent})"

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a concurrency slot, then for our turn; hold the slot for the request."""
        self._acquire_concurrency()
        try:
            self._wait_for_turn()
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """No request may start for `seconds` from now (extends, never shortens, a pause)."""
        with self._cond:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))
            self._cond.notify_all()

    def rate_exceeded(self) -> None:
        """429 rate_limit_exceeded: the server allows less than the configured rate; start fewer requests."""
        with self._cond:
            now = time.monotonic()
            # One cut per window: the threads that hit the same limit together count as one signal.
            if self.rate_per_second is not None and now - self._last_rate_change >= self._window:
                self._set_rate(rate_after_429(self._effective_rate, self.rate_per_second), now)

    # The account-limit hooks of SharedBudget. This per-process limiter (budget switched off) asks for no
    # discovery; an announced concurrency only becomes its cap, within the configured one.

    def wants_discovery(self) -> bool:
        return False

    def observe_limit(self, limit: int, source: str) -> None:
        capped = min(limit, self._concurrency_ceiling) if self._concurrency_ceiling else limit
        if capped != self.max_concurrent:
            with self._cond:
                self.max_concurrent = capped
                self._cond.notify_all()

    def concurrency_exceeded(self) -> None:
        """Nothing to share: the concurrency stays the configured (or announced) one."""

    def succeeded(self) -> None:
        """Nothing to share: the rate recovers by itself after quiet periods."""

    def _set_rate(self, rate: float, now: float) -> None:
        self._effective_rate = rate
        self._per_window = starts_per_window(rate)
        self._last_rate_change = now

    def _acquire_concurrency(self) -> None:
        with self._cond:
            while self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                self._cond.wait()
            self._in_flight += 1

    def _earliest_start(self, now: float) -> float:
        earliest = max(now, self._paused_until)
        if self.rate_per_second is None:
            return earliest
        if self._effective_rate < self.rate_per_second and now - self._last_rate_change >= self._recovery_seconds:
            self._set_rate(rate_after_quiet(self._effective_rate, self.rate_per_second), now)
        while self._recent_starts and self._recent_starts[0] <= now - self._window:
            self._recent_starts.popleft()
        earliest = max(earliest, self._next_start)
        if len(self._recent_starts) >= self._per_window:
            earliest = max(earliest, self._recent_starts[0] + self._window)
        return earliest

    def _wait_for_turn(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                earliest = self._earliest_start(now)
                if earliest <= now:
                    break
                # Woken early by pause() or a released slot; recompute either way.
                self._cond.wait(earliest - now)
            if self.rate_per_second is not None:
                self._recent_starts.append(now)
                self._next_start = now + 1.0 / self._effective_rate
