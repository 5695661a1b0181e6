"""The shared store's clock, as every process of the budget reads it.

Leases and pauses are compared by different hosts, so they must be written and read on one clock: the
store's (the database's, Redis's `TIME`), not each host's. Reading it on every request would cost a round
trip, so it is read every SYNC_SECONDS and carried forward in between with this host's monotonic clock,
which a wrong or stepped wall clock does not move.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

SYNC_SECONDS = 30.0


class StoreClock:
    def __init__(self, read_store_time: Callable[[], float]) -> None:
        self._read_store_time = read_store_time
        self._lock = threading.Lock()
        self._store_time = 0.0
        self._synced_at = -math.inf  # monotonic

    def __call__(self) -> float:
        """Now, in epoch seconds on the store's clock."""
        with self._lock:
            now = time.monotonic()
            if now - self._synced_at >= SYNC_SECONDS:
                before = time.monotonic()
                store_time = self._read_store_time()
                now = time.monotonic()
                # The store read its clock somewhere during the round trip: take the middle.
                self._store_time, self._synced_at = store_time, (before + now) / 2
            return self._store_time + (now - self._synced_at)
