"""The HTTP layer under ElevenLabsClient: every exchange has a total deadline, and the API key never
leaves the configured origin.

* **Total deadline.** `requests` bounds each wait for a byte (the read timeout), not the exchange: a
  server dripping its answer a byte at a time keeps a request open for as long as it likes, past the
  budget slot's lease, and the budget then lets another request into the same slot. `DeadlineWatch`
  shuts the exchange's socket down when its deadline passes (connect, send and the whole answer), so the
  request ends as a timeout while its slot is still leased to it.
* **Redirects.** `requests` strips only `Authorization` when a redirect leaves the host, so it would send
  `xi-api-key` to whatever host a redirect names and hand back that host's answer. Redirects are
  followed here, by hand, only within the configured origin (scheme, host and port) and only where
  the method and body stay as sent (307/308, or any redirect of a GET); anything else is refused
  unanswered (`redirect_refusal`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import socket
import threading
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import ApiConnectionError, ApiTimeoutError

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
METHOD_KEEPING_STATUSES = frozenset({307, 308})
# A request must end while its budget slot is still leased to it; the rest of the lease covers the paced
# start before the request and the slot's release after it.
LEASE_SHARE = 0.8
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RECHECK_SECONDS = 0.05

_current = threading.local()  # the DeadlineWatch of the exchange running on this thread


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def shown_origin(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def redirect_refusal(method: str, status: int, location: str | None, base_url: str) -> str | None:
    """Why a redirect answer is not followed, or None to follow it (to `location`, already absolute)."""
    if status not in REDIRECT_STATUSES or not location:
        return f"answered {status} without a usable redirect"
    if origin(location) != origin(base_url):
        return (f"answered {status}, redirecting to {shown_origin(location)}, another origin than "
                f"{shown_origin(base_url)}; not followed, so the API key and the request stay at "
                "the configured address. Check ELEVENLABS_BASE_URL: it must name the API itself")
    if method != "GET" and status not in METHOD_KEEPING_STATUSES:
        return f"answered {status}, which would turn the {method} into a GET; not followed"
    return None


def request_deadline(wanted: float, lease_seconds: float | None) -> float:
    """The total deadline of one exchange: `wanted`, shortened to fit inside the budget slot's lease."""
    if not (math.isfinite(wanted) and wanted > 0):
        raise ValueError(f"the request deadline must be a positive number of seconds, got {wanted!r}")
    if lease_seconds is None:
        return wanted
    return min(wanted, LEASE_SHARE * lease_seconds)


def _shut_down(connection: Any) -> bool:
    """Shut the connection's socket down (waking a thread blocked reading it); False when it has none yet."""
    sock = getattr(connection, "sock", None)
    if not isinstance(sock, socket.socket):
        return False
    try:
        # The plain socket's shutdown: SSLSocket.shutdown would pull the TLS object from under the reader.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to cut
    return True


class _Watchdog:
    """One thread per process that expires every DeadlineWatch on time: starting a timer thread per request
    would delay each request's send by the thread's start-up, which a loaded machine makes long."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, DeadlineWatch]] = []  # a heap, earliest first
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def expire_at(self, moment: float, watch: DeadlineWatch) -> None:
        with self._wake:
            heapq.heappush(self._due, (moment, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="request-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, watch = heapq.heappop(self._due)
            watch.expire()


_watchdog = _Watchdog()


class DeadlineWatch:
    """Cuts the connection of the exchange running on this thread once `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connection: Any = None
        self._finished = False

    def __enter__(self) -> DeadlineWatch:
        _current.watch = self
        _watchdog.expire_at(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.watch = None
        with self._lock:
            self._finished = True
            self._connection = None

    def attach(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection

    def detach(self, connection: Any) -> None:
        """The connection goes back to the pool for others: never cut it from here on."""
        with self._lock:
            if self._connection is connection:
                self._connection = None

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            if not _shut_down(self._connection):
                # Still connecting (no socket yet): look again shortly; the connect timeout bounds this.
                _watchdog.expire_at(time.monotonic() + _RECHECK_SECONDS, self)


class _Watched:
    """Tells the thread's DeadlineWatch which connection its exchange uses, and when it is given back."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(connection)
        return connection

    def _put_conn(self, connection: Any) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.detach(connection)
        super()._put_conn(connection)  # type: ignore[misc]


class _WatchedHTTPPool(_Watched, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_Watched, HTTPSConnectionPool):
    pass


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connection pools (direct or through a proxy) report to the DeadlineWatch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def new_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    # max_retries=0: retries are decided by the client, which knows whether a method is safe to repeat.
    adapter = WatchedAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "application/json"
    return session


def next_location(response: requests.Response, url: str) -> str | None:
    location = response.headers.get("Location")
    return urljoin(url, location) if location else None


def _never_connected(exc: BaseException) -> bool:
    """True when urllib3 failed before a connection existed, so no byte was sent."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # NewConnectionError (refused, DNS) subclasses ConnectTimeoutError in urllib3 2.
        if isinstance(current, (urllib3.exceptions.ConnectTimeoutError, requests.exceptions.ConnectTimeout)):
            return True
        # `reason` is an exception on urllib3's errors but a string on ssl.SSLError.
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        pending.extend(link for link in linked if isinstance(link, BaseException))
    return False


def transport_error(
    request: str, exc: requests.exceptions.RequestException, base_url: str, deadline_passed: float | None
) -> ApiConnectionError:
    """The client's error for an exchange that got no answer; `deadline_passed`: the deadline that cut it."""
    if deadline_passed is not None:
        sent = not _never_connected(exc)
        return ApiTimeoutError(f"{request}: no complete answer within the {deadline_passed:g}s deadline"
                               + (", request may have been processed" if sent else ""), request_sent=sent)
    if isinstance(exc, requests.exceptions.SSLError):
        return ApiConnectionError(
            f"{request}: TLS handshake with {base_url} failed; check ELEVENLABS_BASE_URL "
            "(https:// against a plain-HTTP server?) and the system's certificates",
            request_sent=False,
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ApiTimeoutError(f"{request}: connect timeout to {base_url}", request_sent=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return ApiTimeoutError(f"{request}: read timeout, request may have been processed", request_sent=True)
    if _never_connected(exc):
        return ApiConnectionError(f"{request}: could not connect to {base_url}", request_sent=False)
    return ApiConnectionError(
        f"{request}: connection lost, request may have been processed ({type(exc).__name__})", request_sent=True
    )
