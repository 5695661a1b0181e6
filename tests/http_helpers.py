"""A real HTTP server on 127.0.0.1, on a port of its own (so another origin than the sandbox), that records
every request and answers as the test says: scripted answers the sandbox never gives, or a host that must
never hear from the client."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Answer = tuple[int, str, dict[str, str]]  # status, body, headers


class RecordingServer:
    """`answer(method, path)` gives each answer; `requests` holds (method, path), `headers` what each carried."""

    def __init__(self, answer: Callable[[str, str], Answer]) -> None:
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path))
                outer.headers.append(dict(self.headers.items()))
                status, body, headers = answer(self.command, self.path)
                payload = body.encode()
                self.send_response(status)
                for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def scripted_server(script: list[Answer]) -> RecordingServer:
    """Answers with the script's entries in order."""
    remaining = list(script)
    return RecordingServer(lambda method, path: remaining.pop(0))
