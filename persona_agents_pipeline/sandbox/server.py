"""A local ElevenLabs agents API for tests, demos and load experiments.

Python API::

    with SandboxServer(rate_limit=20, max_concurrent=5, state_path=None) as sandbox:
        client = ElevenLabsClient("sandbox-test-key", sandbox.url)

CLI entry point (the ``persona-agents sandbox`` command calls this)::

    run_sandbox(
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,                 # 8765
        *,
        api_keys: Sequence[str] | str | None = None,   # default ("sandbox-test-key",)
        restricted_api_keys: Sequence[str] = ("sandbox-restricted-key",),  # keys without convai permission
        state_path: Path | str | None = None,     # sqlite file; None keeps agents in memory
        latency: float = 0.0,                     # seconds added to every request
        rate_limit: float | None = None,          # requests per second (sliding 1 s window) -> 429
        max_concurrent: int | None = None,        # in-flight requests -> 429 concurrent_limit_exceeded
        retry_after: bool = True,                 # whether 429s carry Retry-After (seconds)
        error_rate: float = 0.0,                  # fraction answered 500/503 (nothing is done)
        error_after_create_rate: float = 0.0,     # fraction of creates that create, then answer 500
        drop_after_create_rate: float = 0.0,      # fraction of creates that create, then drop the connection
        drop_delete_response_rate: float = 0.0,   # fraction of DELETEs carried out (if they can be) but never answered
        create_answer_delay_seconds: float = 0.0, # creates are carried out at once, answered this much later
        replay_create_answer_rate: float = 0.0,   # fraction of creates answered with the previous create's agent id
        listing_lag_seconds: float = 0.0,         # a created agent is listed/found only this many seconds later
        listing_lag_lists: int = 0,               # ... and only after this many further list calls
        search_fault: str | None = None,          # adoption searches fail: non_json, 400, 401, 429 or timeout
        search_fault_rate: float = 1.0,           # ... for this fraction of searches
        search_timeout_seconds: float = 2.0,      # how long a "timeout" search keeps the client waiting
        redirect_status: int | None = None,       # answer every API request with this redirect ...
        redirect_to: str | None = None,           # ... to this base URL + /moved + the path (served here)
        drip_interval: float = 0.0,               # write answers one byte every this many seconds ...
        drip_method: str | None = None,           # ... only to this method's requests, when set
        malformed_list_items: list = [],          # items of unexpected shape added to agent lists
        list_page_fault: str | None = None,       # agent list pages after the first fail: 500 or malformed
        seed: int | None = None,                  # makes the faults reproducible
        on_ready: Callable[[str], None] | None = None,  # called with the base URL once listening
    ) -> None                                     # serves until KeyboardInterrupt

Test conveniences live under ``/_sandbox`` (loopback clients only, no key):
``POST /_sandbox/config`` (JSON with any of the limit/fault names above),
``GET /_sandbox/stats`` and ``DELETE /_sandbox/agents``.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from .agent_store import AgentStore
from .faults import SandboxConfig
from .gateway import RequestRecord, SandboxGateway
from .protocol import DROP, RAW_BODY_PREFIX

DEFAULT_PORT = 8765
DEFAULT_API_KEYS = ("sandbox-test-key",)
DEFAULT_RESTRICTED_API_KEYS = ("sandbox-restricted-key",)

logger = logging.getLogger("persona_agents_pipeline.sandbox")


def _encode(body: Any) -> bytes:
    if isinstance(body, str) and body.startswith(RAW_BODY_PREFIX):
        return body.removeprefix(RAW_BODY_PREFIX).encode()
    return json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools behave as against the real API
    server_version = "ElevenLabsSandbox/1.0"
    timeout = 60  # idle keep-alive connections are closed eventually
    # Headers and body leave in two writes: with Nagle's algorithm the body waits for the client's delayed
    # ACK of the headers (40 ms on Linux), which the real API does not add to every request.
    disable_nagle_algorithm = True
    server: _HttpServer

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.gateway.handle(self.command, url.path, url.query, headers, body, self.client_address[0])
        if reply is DROP:
            # Created (maybe) but never answered: the client sees the connection close.
            self.close_connection = True
            return
        try:
            payload = _encode(reply.body) if reply.body is not None and reply.status != 204 else b""
            self.send_response(reply.status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if reply.drip_interval:
                self._drip(payload, reply.drip_interval)
            else:
                self.wfile.write(payload)
        finally:
            if reply.after_written:
                reply.after_written()

    def _drip(self, payload: bytes, interval: float) -> None:
        """Write the body a byte every `interval` seconds, until the client hangs up (seen at once)."""
        for index in range(len(payload)):
            readable, _, _ = select.select([self.connection], [], [], interval)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break
                except OSError:
                    break
                time.sleep(interval)
            try:
                self.wfile.write(payload[index:index + 1])
            except OSError:
                break
        self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: SandboxGateway) -> None:
        self.gateway = gateway
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr, outside any log or test capture. A client hanging up
        before its answer is written (a killed worker, a client's timeout) is ordinary for a server: debug."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            logger.debug("client %s hung up before its answer: %s", client_address[0], error)
        else:
            logger.exception("handling a request from %s failed", client_address[0])

    def close_open_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SandboxServer:
    """The sandbox on a background thread. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Sequence[str] | str | None = None,
        restricted_api_keys: Sequence[str] = DEFAULT_RESTRICTED_API_KEYS,
        state_path: Path | str | None = None,
        **limits_and_faults: Any,
    ) -> None:
        if isinstance(api_keys, str):
            api_keys = (api_keys,)
        self._address = (host, port)
        self._state_path = Path(state_path) if state_path else None
        self._config = SandboxConfig(**limits_and_faults)
        self._api_keys = tuple(api_keys or DEFAULT_API_KEYS)
        self._restricted_keys = tuple(restricted_api_keys)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._running().server_address[:2]
        return f"http://{host}:{port}"

    @property
    def gateway(self) -> SandboxGateway:
        return self._running().gateway

    def _running(self) -> _HttpServer:
        if self._httpd is None:
            raise RuntimeError("sandbox is not running; call start()")
        return self._httpd

    def start(self) -> SandboxServer:
        store = AgentStore(self._state_path)
        gateway = SandboxGateway(store, self._config, self._api_keys, self._restricted_keys)
        self._httpd = _HttpServer(self._address, gateway)
        # A short poll interval keeps stop() fast (shutdown waits for the next poll).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="elevenlabs-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_open_connections()
        self._httpd.server_close()
        self._httpd.gateway.store.close()
        if self._thread:
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Direct accessors for tests: they bypass HTTP, auth, limits and faults.

    def agents(self) -> list[dict[str, Any]]:
        return self.gateway.store.all()

    def create_agent_directly(self, payload: dict[str, Any]) -> str:
        return self.gateway.endpoints.create_directly(payload)

    def delete_agent_directly(self, agent_id: str) -> bool:
        return self.gateway.store.delete(agent_id)

    def stats(self) -> dict[str, Any]:
        return self.gateway.stats()

    def request_log(self) -> list[RequestRecord]:
        return self.gateway.request_log()

    def configure(self, **changes: Any) -> None:
        self.gateway.reconfigure(changes)


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve the sandbox in the foreground until interrupted. See the module docstring for options."""
    server = SandboxServer(host, port, **options)
    server.start()
    try:
        if on_ready:
            on_ready(server.url)
        threading.Event().wait()  # the serving thread does the work; wait for Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
