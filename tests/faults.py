"""Misbehaving peers for fault tests: a TCP blackhole and a slow identity provider.

Both listen on 127.0.0.1 on a free port, in a thread of the test process, and are stopped by
the fixture that started them. Real processes (gunicorn workers, subprocesses) connect to them
like to any server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Blackhole:
    """Accepts every TCP connection and never sends a byte: a silent, not a dead, server.

    A refused connection fails in microseconds; this is the case that only timeouts bound.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Blackhole:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # kept open, never read from, never answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()
        self._server.close()


#: ``answer(body, headers)``, called when a refresh arrives; returns what to send after the delay.
Answer = Callable[[dict[str, Any], dict[str, str]], Callable[[], tuple[int, dict[str, Any]]]]


class SlowIdP:
    """An identity provider that holds every call for ``delay`` seconds before answering.

    ``POST /api/refresh-user-cache/`` calls ``answer(body, headers)`` *when the call arrives* (so
    a test can capture or forward it at that moment) and sends the ``(status, json)`` its result
    returns after the delay (503 without ``answer``); ``GET /healthz`` is held the same way.
    Counts total and concurrent refresh calls.
    """

    def __init__(
        self,
        delay: float,
        answer: Answer | None = None,
    ) -> None:
        self.delay = delay
        self.answer = answer
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                time.sleep(idp.delay)
                self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with idp._lock:
                    idp.calls += 1
                    idp.in_flight += 1
                    idp.max_in_flight = max(idp.max_in_flight, idp.in_flight)
                try:
                    headers = dict(self.headers.items())
                    later = idp.answer(body, headers) if idp.answer is not None else None
                    time.sleep(idp.delay)
                    status, payload = later() if later is not None else (503, {"success": False})
                    self._send(status, payload)
                finally:
                    with idp._lock:
                        idp.in_flight -= 1

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                with contextlib.suppress(OSError):  # the client may have given up long ago
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up on a held call is the point, not an error

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowIdP:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2)
