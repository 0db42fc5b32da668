"""Real HTTP peers on 127.0.0.1 for the tests: a free port, and a threaded ``http.server`` whose
subclasses say how to answer (webhook receivers, an attacker's host).
"""

from __future__ import annotations

import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T", bound="LoopbackServer")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (now), for a server another process starts.

    The port is taken below the kernel's ephemeral range: a port the kernel hands out by
    ``bind(0)`` is one it may also give to any outgoing connection (the tests make thousands)
    before the server binds it, and the server then fails with "address already in use"."""
    low, _ = _ephemeral_range()
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) that hands every GET, POST and PUT to
    :meth:`answer`. A context manager: served from ``__enter__`` to ``__exit__``. ``path`` is
    appended to :attr:`url`."""

    path = ""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                status, body, content_type = outer.answer(self.command, self.path, self.headers,
                                                          self.rfile.read(n) if n else b"")
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _any  # noqa: N815 - http.server naming

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits for serve_forever to notice: every 0.05 s, not the default 0.5 s
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str | None]:
        """(status, body, content type) for one request."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def __enter__(self: T) -> T:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
