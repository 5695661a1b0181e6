"""Polling for a condition in another thread or process: returns as soon as it holds, fails with what it waited for."""

from __future__ import annotations

import time


def wait_until(condition, what: str, timeout: float = 300, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(interval)
