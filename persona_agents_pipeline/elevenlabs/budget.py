"""One API budget per ElevenLabs account, shared by every process that calls it.

The account's limits hold for the account, not per process: the CLI, the application's `ensure_agent`
calls and every Dagster run on every host spend the same concurrency. So the budget lives where all of
them meet: the personas database (SQLite or PostgreSQL, `budget_sql.py`) or Redis (`budget_redis.py`).

Two rules, both shared:

* **Leased in-flight slots.** A request holds one of `concurrency` numbered slots while it runs. A slot
  is a lease with an expiry, so a process killed mid-request never holds it for longer than one lease;
  live requests finish well inside it (the lease exceeds the client's connect + read timeouts).
* **Request starts in a sliding window** (only when a rate is configured; ElevenLabs throttles on
  concurrency): a ring of floor(rate) start times; a request may start only on the ring entry whose
  time is older than the window plus a margin, so no window ever sees more than floor(rate) starts.
  Batch starts are also paced one average gap apart (window / ring), reserved ahead and slept to, so the
  ring's entries never come free as one burst.

Every lease, pause and start is timed by the store's clock (store_clock.py), never a host's own: hosts whose
clocks disagree still share the slots and pauses fairly. A stored state no process could have written (a
concurrency of 0, a pause far ahead) is reset rather than obeyed, and what a response teaches the budget is
never worth failing a request that is done when the store is away.

Interactive callers (`ensure_agent` while a trainee waits) come first: while any has been seen in the
last INTERACTIVE_RECENT_SECONDS, the lowest slots and ring entries are reserved for them, so a backfill
never takes the whole budget; when none has, a backfill may use all of it.

Why by hand: pyrate-limiter and `limits` pace request *rates* in Redis/SQL, but neither holds leased
in-flight slots (a counter a killed process cannot leak), shares an adaptive concurrency, or reserves
headroom by priority atomically with them; the rate ring here is the same sliding-window log they use.

The concurrency itself is discovered and adapted (`observe_limit`, `concurrency_exceeded`,
`succeeded`): the account's own figure when known, capped by any configured ceiling; cut on
`too_many_concurrent_requests`, grown back while quiet. The rate adapts the same way (`rate_exceeded`,
`succeeded`): a configured rate above the server's meets `rate_limit_exceeded`, which cuts the shared rate
x0.9 (never below a quarter of the configured one) and so the ring entries in use; each quiet 30 s gives 5%
back. Without it every process met a 429 and a Retry-After pause again and again; with it all of them settle
just under the server's rate. Each state change is one compare-and-set, so simultaneous 429s across processes
cut once.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from enum import Enum
from typing import Iterator

from .budget_backend import BudgetBackend, BudgetState, BudgetUnavailableError
from .rate_limit import RATE_QUIET_SECONDS_BEFORE_GROWTH, rate_after_429, rate_after_quiet, starts_per_window
from .store_clock import StoreClock

logger = logging.getLogger(__name__)

# How much each kind of evidence about the account's concurrency is trusted; a higher one replaces a lower.
SOURCE_RANK = {"default": 0, "configuration": 1, "plan": 2, "account": 3, "header": 4}
# The smallest plan's concurrency (Free, per ElevenLabs' published plan limits): safe when nothing is known.
DEFAULT_CONCURRENCY = 2
# Documented concurrency per plan (https://elevenlabs.io/pricing; the Multilingual v2 column, the conservative one).
PLAN_CONCURRENCY = {"free": 2, "starter": 3, "creator": 5, "pro": 10, "scale": 15, "business": 15}
CUT_FACTOR = 0.75
QUIET_SECONDS_BEFORE_GROWTH = 5.0
STATE_REFRESH_SECONDS = 0.25
INTERACTIVE_RECENT_SECONDS = 60.0
# Most entries in the shared ring of request starts (see SharedBudget.__init__).
MAX_RING = 100
# How late past its reserved start a request may still go; a later one has its start moved (_started_on_time).
LATE_START_TOLERANCE_SECONDS = 0.01
# Bounds of a usable shared state: as ELEVENLABS_MAX_CONCURRENT's highest value, and the longest pause any
# answer imposes. A stored state outside them (edited by hand, or damaged) would hang every process: reset.
MAX_CONCURRENCY = 1000
MAX_PAUSE_SECONDS = 600.0


def _advisory(learn):
    """What a response teaches the budget is worth a write, not a failed request: an answer already received
    (a create done) must not turn into an error because the budget's store is away."""

    @functools.wraps(learn)
    def wrapper(self, *args, **kwargs):
        try:
            return learn(self, *args, **kwargs)
        except BudgetUnavailableError as exc:
            logger.warning("the API budget did not learn from an answer: %s", exc)
            return None

    return wrapper


class Priority(str, Enum):
    INTERACTIVE = "interactive"  # someone is waiting: ensure_agent before a session
    BATCH = "batch"  # CLI bulk commands, Dagster runs, backfills


def reserved_for_interactive(total: int, fraction: float) -> int:
    """Slots (or starts) kept for interactive callers: a fraction, at least one, and never all."""
    if total < 2 or fraction <= 0:
        return 0
    return min(total - 1, max(1, round(total * fraction)))


class SharedBudget:
    """The budget as one client sees it: `slot()` around every request, plus what responses teach."""

    def __init__(
        self,
        backend: BudgetBackend,
        account: str,
        *,
        priority: Priority = Priority.BATCH,
        concurrency_ceiling: int | None = None,
        rate_per_second: float | None = None,
        lease_seconds: float = 45.0,
        interactive_reserve: float = 0.1,
        window_seconds: float = 1.0,
        jitter_margin_seconds: float = 0.05,
    ) -> None:
        if concurrency_ceiling is not None and concurrency_ceiling < 1:
            raise ValueError("concurrency_ceiling must be at least 1 or None")
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive or None")
        self.backend, self.account, self.priority = backend, account, priority
        self.concurrency_ceiling = concurrency_ceiling
        self.rate_per_second = rate_per_second
        self.lease_seconds = lease_seconds
        self.interactive_reserve = interactive_reserve
        # The margin absorbs the jitter between a start's stamp and its arrival at the server. 50 ms, as in
        # RequestLimiter: a 2,000-persona Dagster backfill at 10/s ran at 86% of the rate from first to last
        # agent with 100 ms and at 95% with 50 ms, without a 429 (README "At 100,000 personas").
        self._window = window_seconds + jitter_margin_seconds
        # A high rate would make a ring of that many entries, read on every request; above MAX_RING the
        # window is cut into k equal parts of at most MAX_RING starts each (k * ring <= rate, so every
        # 1-second interval still sees at most `rate` starts).
        # A cut rate uses the first floor(rate / parts) entries of each part's ring (see _ring_in_use).
        self._parts = max(1, math.ceil(math.floor(rate_per_second) / MAX_RING)) if rate_per_second else 1
        self._ring = max(1, math.floor(rate_per_second / self._parts)) if rate_per_second else 0
        self._start_window = self._window / self._parts
        self._now = StoreClock(backend.now)
        self._cached: BudgetState | None = None
        self._cached_at = -math.inf
        self._lock = threading.Lock()
        # At most `concurrency` threads of this process poll the shared store; the rest wait here.
        self._local = threading.Condition()
        self._local_waiting_or_running = 0
        initial = concurrency_ceiling or DEFAULT_CONCURRENCY
        self._initial = BudgetState(initial, initial, "configuration" if concurrency_ceiling else "default")
        backend.create_state(account, self._initial)

    def __repr__(self) -> str:
        return (f"SharedBudget(backend={type(self.backend).__name__}, priority={self.priority.value}, "
                f"ceiling={self.concurrency_ceiling}, rate={self.rate_per_second})")

    @property
    def max_concurrent(self) -> int:
        """An upper bound of this process's requests in flight (sizes the HTTP connection pool)."""
        return self.concurrency_ceiling or max(16, self.state().concurrency)

    # ---- state --------------------------------------------------------------------------------

    def state(self, *, fresh: bool = False) -> BudgetState:
        with self._lock:
            now = time.monotonic()
            if fresh or self._cached is None or now - self._cached_at >= STATE_REFRESH_SECONDS:
                self._cached = self._read_or_recreate()
                self._cached_at = now
            return self._cached

    def _read_or_recreate(self) -> BudgetState:
        """The shared state; created again when it has gone (Redis restarted without persistence, flushed or
        evicted the key): every process starts over from its own configuration and relearns the account's
        limit from the next response, instead of failing its requests."""
        for _ in range(3):
            state = self.backend.state(self.account)
            if state is not None and self._damage(state) is None:
                return state
            if state is None:
                self.backend.create_state(self.account, self._initial)
            else:
                logger.warning("the API budget's shared state held %s; it is reset to this process's configuration",
                               self._damage(state))
                self.backend.compare_and_set(self.account, state.version, replace(self._initial, version=state.version + 1))
        raise RuntimeError("the API budget's shared state cannot be created again in its store")

    def _damage(self, state: BudgetState) -> str | None:
        """What makes a stored state unusable, or None."""
        if not (1 <= state.concurrency <= MAX_CONCURRENCY and 1 <= state.account_limit <= MAX_CONCURRENCY):
            return f"a concurrency of {state.concurrency} (limit {state.account_limit}; accepted 1 to {MAX_CONCURRENCY})"
        if not (math.isfinite(state.paused_until) and state.paused_until <= self._now() + MAX_PAUSE_SECONDS):
            return f"a pause more than {MAX_PAUSE_SECONDS:.0f} s ahead"
        if not (math.isfinite(state.rate) and state.rate >= 0):
            return f"a rate of {state.rate}"
        return None

    def _change(self, propose) -> bool:
        """Apply `propose(current) -> new state or None` with compare-and-set; retried on a lost race."""
        for _ in range(10):
            current = self.state(fresh=True)
            proposed = propose(current)
            if proposed is None:
                return False
            if self.backend.compare_and_set(self.account, current.version,
                                            replace(proposed, version=current.version + 1)):
                self.state(fresh=True)
                return True
        return False

    def wants_discovery(self) -> bool:
        """True while the account's own figure is unknown (only configuration or the default)."""
        return SOURCE_RANK[self.state().source] < SOURCE_RANK["plan"]

    @_advisory
    def observe_limit(self, limit: int, source: str) -> None:
        """Evidence of the account's concurrency: the header, `GET /v1/user`, or the plan's figure."""
        if limit < 1:
            return
        capped = min(limit, self.concurrency_ceiling) if self.concurrency_ceiling else limit
        current = self.state()
        if current.account_limit == capped and current.source == source:
            return

        def propose(state: BudgetState) -> BudgetState | None:
            if SOURCE_RANK[source] < SOURCE_RANK[state.source]:
                return None
            if state.account_limit == capped and state.source == source:
                return None
            return replace(state, account_limit=capped, concurrency=capped, source=source)

        self._change(propose)

    @_advisory
    def concurrency_exceeded(self) -> None:
        """429 too_many_concurrent_requests: someone else spends the account too; use fewer slots."""
        now = self._now()

        def propose(state: BudgetState) -> BudgetState | None:
            # Simultaneous 429s (one per thread and process) are one signal: one cut per window.
            if now - state.changed_at < self._window or state.concurrency <= 1:
                return None
            return replace(state, concurrency=max(1, math.floor(state.concurrency * CUT_FACTOR)), changed_at=now)

        self._change(propose)

    @_advisory
    def rate_exceeded(self) -> None:
        """429 rate_limit_exceeded: the server allows fewer starts than configured; every process starts fewer."""
        if not self.rate_per_second:
            return
        now = self._now()

        def propose(state: BudgetState) -> BudgetState | None:
            current = self._rate_in_force(state)
            cut = rate_after_429(current, self.rate_per_second)
            # As for the concurrency: simultaneous 429s (every thread of every process) are one signal.
            if now - state.rate_changed_at < self._window or cut >= current:
                return None
            return replace(state, rate=cut, rate_changed_at=now)

        self._change(propose)

    def _rate_in_force(self, state: BudgetState) -> float:
        """This process's configured rate, or the shared one once 429s have cut it below that."""
        return min(state.rate, self.rate_per_second) if state.rate else self.rate_per_second

    @_advisory
    def succeeded(self) -> None:
        """A request went through: after a quiet spell, grow back toward the account's limit and the
        configured rate."""
        self._grow_rate()
        state = self.state()
        now = self._now()
        if state.concurrency >= state.account_limit or now - state.changed_at < QUIET_SECONDS_BEFORE_GROWTH:
            return

        def propose(current: BudgetState) -> BudgetState | None:
            if current.concurrency >= current.account_limit or now - current.changed_at < QUIET_SECONDS_BEFORE_GROWTH:
                return None
            return replace(current, concurrency=current.concurrency + 1, changed_at=now)

        self._change(propose)

    def _grow_rate(self) -> None:
        now = self._now()

        def quiet_and_cut(state: BudgetState) -> bool:
            return (bool(self.rate_per_second) and self._rate_in_force(state) < self.rate_per_second
                    and now - state.rate_changed_at >= RATE_QUIET_SECONDS_BEFORE_GROWTH)

        def propose(state: BudgetState) -> BudgetState | None:
            if not quiet_and_cut(state):
                return None
            return replace(state, rate=rate_after_quiet(self._rate_in_force(state), self.rate_per_second),
                           rate_changed_at=now)

        if quiet_and_cut(self.state()):
            self._change(propose)

    @_advisory
    def pause(self, seconds: float) -> None:
        """No request of any process starts for `seconds` from now (system_busy, Retry-After)."""
        until = self._now() + min(max(0.0, seconds), MAX_PAUSE_SECONDS)
        self._change(lambda state: replace(state, paused_until=until) if until > state.paused_until else None)

    # ---- the slot around a request ------------------------------------------------------------

    def _first(self, total: int, state: BudgetState) -> int:
        """Interactive callers may use every entry; batch callers skip the reserved lowest ones while
        interactive callers are about."""
        if self.priority is Priority.INTERACTIVE or self._now() - state.interactive_seen_at > INTERACTIVE_RECENT_SECONDS:
            return 0
        return reserved_for_interactive(total, self.interactive_reserve)

    def _announce_interactive(self) -> None:
        """Make batch callers keep the reserve free (one shared write per few seconds at most)."""
        now = self._now()
        if now - self.state().interactive_seen_at > 5.0:
            self._change(lambda state: replace(state, interactive_seen_at=now)
                         if now - state.interactive_seen_at > 5.0 else None)

    @contextmanager
    def slot(self) -> Iterator[None]:
        holder = uuid.uuid4().hex
        if self.priority is Priority.INTERACTIVE:
            self._announce_interactive()
        self._enter_locally()
        try:
            slot = self._take_slot(holder)
            try:
                self._take_start()
                yield
            finally:
                self._release(slot, holder)
        finally:
            self._leave_locally()

    @_advisory
    def _release(self, slot: int, holder: str) -> None:
        """A slot not given back (its store away) comes free when its lease ends."""
        self.backend.release_slot(self.account, slot, holder)

    def _enter_locally(self) -> None:
        with self._local:
            while self._local_waiting_or_running >= max(1, self.state().concurrency):
                self._local.wait(0.05)
            self._local_waiting_or_running += 1

    def _leave_locally(self) -> None:
        with self._local:
            self._local_waiting_or_running -= 1
            self._local.notify()

    def _take_slot(self, holder: str) -> int:
        delay = 0.002
        while True:
            state = self.state()
            now = self._now()
            if state.paused_until > now:
                time.sleep(state.paused_until - now)
                continue
            slot = self.backend.take_slot(self.account, self._first(state.concurrency, state), state.concurrency,
                                          holder, now, now + self.lease_seconds)
            if slot is not None:
                return slot
            # Slots free up in other processes too, unseen here: poll with a growing, jittered pause.
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(0.05, delay * 2)

    def _ring_in_use(self, state: BudgetState) -> int:
        """The ring entries in use: all of them at the configured rate, fewer at a cut one. With the window cut
        into parts, parts * entries <= rate still holds."""
        return min(self._ring, starts_per_window(self._rate_in_force(state) / self._parts))

    def _take_start(self) -> None:
        if not self._ring:
            return
        while True:
            state = self.state()
            ring = self._ring_in_use(state)
            # Batch starts are paced evenly, one average gap apart, rather than let through as a burst whenever
            # ring entries come free: a burst's requests queue in the client and the server and reach it spread
            # out, and its late ones crowd the next window. The start is reserved ahead and slept to, so the
            # wake-up's own delay adds nothing to the gap. Interactive callers are not paced: the ring alone
            # bounds their starts.
            gap = 0.0 if self.priority is Priority.INTERACTIVE else self._start_window / ring
            reserved = self.backend.take_start(self.account, self._first(ring, state), ring, self._start_window, gap)
            if reserved is None:
                time.sleep(random.uniform(0.001, 0.005))
                continue
            entry, start = reserved
            time.sleep(max(0.0, start - self._now()))
            if self._started_on_time(entry, start):
                return

    def _started_on_time(self, entry: int, start: float) -> bool:
        """A process that stalls past its start (a garbage collection or a starved CPU: 80-130 ms a second into
        each run of the 1,000-persona cluster test) would send late, and its entry come free one window after
        the stale stamp while its request is still on its way: the server then sees 51 in a second at 50/s.
        So a late start is moved to now before the request goes (a write only when late). False when the stall
        outlasted a window and the entry is someone else's by now."""
        for _ in range(3):  # each move is late only by its own write; a third is as good as it gets
            if self._now() - start <= LATE_START_TOLERANCE_SECONDS:
                return True
            start = self.backend.move_start(self.account, entry, start)
            if start is None:
                return False
        return True
