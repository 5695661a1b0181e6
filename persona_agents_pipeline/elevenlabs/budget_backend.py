"""What the shared budget (budget.py) keeps, and the atomic primitives a store offers it (SQL, Redis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import ElevenLabsError


class BudgetUnavailableError(ElevenLabsError):
    """The budget's store stayed out of reach past its bound: no request is sent without the budget."""


@dataclass(frozen=True)
class BudgetState:
    account_limit: int  # the account's concurrency as best known (capped by the configured ceiling)
    concurrency: int  # slots usable now: account_limit, or fewer after too_many_concurrent_requests
    source: str  # a SOURCE_RANK key: where account_limit came from
    paused_until: float = 0.0  # epoch seconds; nothing starts before (system_busy, Retry-After)
    changed_at: float = 0.0  # last cut or growth, epoch seconds
    interactive_seen_at: float = 0.0  # last request of an interactive caller, epoch seconds
    version: int = 0  # bumped by every change (compare-and-set)
    # Starts per second usable now, after rate_limit_exceeded 429s; 0.0 until the first: the configured rate.
    rate: float = 0.0
    rate_changed_at: float = 0.0  # last rate cut or growth, epoch seconds


class BudgetBackend(Protocol):
    """Atomic primitives over shared storage; all policy lives in SharedBudget."""

    def state(self, account: str) -> BudgetState | None: ...

    def create_state(self, account: str, state: BudgetState) -> None:
        """Insert the state unless one exists (another process may have won)."""

    def compare_and_set(self, account: str, expected_version: int, new: BudgetState) -> bool: ...

    def take_slot(self, account: str, first: int, end: int, holder: str, now: float, lease_until: float) -> int | None:
        """Lease the lowest slot in [first, end) whose lease has expired; None when all are held."""

    def release_slot(self, account: str, slot: int, holder: str) -> None: ...

    def take_start(self, account: str, first: int, end: int, window: float, gap: float) -> tuple[int, float] | None:
        """Reserve the next start on the oldest ring entry in [first, end): no earlier than `window` after that
        entry's last start, nor than `gap` after the newest start of the whole ring, nor than now (the store's clock). Return the
        entry and the start (epoch seconds), or None when no entry can be reserved this instant (poll again).
        Callers take starts one at a time per account. The clock is read once the ring is held: a stamp taken
        before queuing for the store would lie in the past, and let the next caller in early."""

    def move_start(self, account: str, entry: int, reserved: float) -> float | None:
        """Move the entry's start from `reserved` to now (the store's clock, read once the ring is held) and return it; None when
        the entry has been reserved again since."""

    def held_slots(self, account: str, now: float) -> int:
        """Slots whose lease has not expired (for tests and status)."""

    def now(self) -> float:
        """The store's clock, epoch seconds: every lease and pause is on it, whatever each host's clock says."""

    def close(self) -> None:
        """Release the connections."""
