"""For tests and benchmarks that start local servers (the sandbox, Dagster, Redis): a free loopback port to
give one, and polling until it, or any other condition, answers."""

from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it), for a server started next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], what: str, timeout: float = 300, interval: float = 0.5,
               not_yet: tuple[type[BaseException], ...] = ()) -> T:
    """The condition's first truthy answer, polled every `interval` seconds; an exception in `not_yet` counts
    as a falsy answer (a server still starting refuses connections). Fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = condition()
        except not_yet:
            answer = None
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up waiting until {what} ({timeout:g} s)")
        time.sleep(interval)
