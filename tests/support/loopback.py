"""The lifecycle every loopback server of the tests shares.

A ``LoopbackServer`` is started on 127.0.0.1 (on port 0 where the server can bind it
itself, else on a port picked free just before), waited for until it accepts
connections, and stopped; it is a context manager that does both::

    with FakeOpenAI() as server:
        ...  # server.url

Subclasses say how to launch and halt themselves (``_launch``, ``_halt``) and, when
accepting a connection is not enough, when they are ready (``_ready``). The servers
that run in a thread of the test process hold an ``HTTPThread``; the others run in a
process of their own (``steptrace ui``, PostgreSQL).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now, for servers that cannot be told to bind port 0."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not become ready in its ``startup_timeout_s``."""


class LoopbackServer:
    """A server on 127.0.0.1: ``start()`` returns it ready; ``stop()`` may be called
    more than once; ``url`` is where clients reach it."""

    startup_timeout_s: float = 30.0
    port: int = 0
    """Set by ``_launch``."""
    _running: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        if self._running:
            raise RuntimeError(f"{type(self).__name__} is running already")
        self._launch()
        self._running = True
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while not self._ready():
                if time.monotonic() > deadline:
                    raise ServerDidNotStart(
                        f"{type(self).__name__} not ready in {self.startup_timeout_s} s"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> str:
        """Stop the server (once); returns what it printed, for servers that print."""
        if not self._running:
            return ""
        self._running = False
        return self._halt()

    def _launch(self) -> None:
        raise NotImplementedError

    def _halt(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once clients can use it; raises ``ServerDidNotStart`` if it never will."""
        return accepts_connections(self.port)

    def __enter__(self) -> Self:
        """Starts the server unless it runs already (``with start_ui(...) as server:``);
        the block's end stops it either way."""
        return self if self._running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timed out, closed a stream early) is expected in tests.
        pass


class HTTPThread:
    """A stdlib ``ThreadingHTTPServer`` bound to 127.0.0.1 port 0, serving
    ``handler`` in a daemon thread (listening, so ready, once constructed)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = _QuietHTTPServer((HOST, 0), handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"loopback-{handler.__name__}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> str:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        return ""


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingHTTPServer(LoopbackServer):
    """A JSON server that answers every GET with ``body`` and keeps the headers of each
    request in ``seen`` (lower-cased names)."""

    def __init__(self, body: bytes = b'{"ok": true}') -> None:
        self.body = body
        self.seen: list[dict[str, str]] = []

    def _launch(self) -> None:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self._http = HTTPThread(Handler)
        self.port = self._http.port

    def _halt(self) -> str:
        return self._http.close()
