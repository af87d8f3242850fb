"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread.

It records every POST (path, headers, JSON body) and answers with the statuses it
is given in turn (then 200), so a test can make a hook fail before it succeeds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET_PATH = "/services/T0SECRET/B0SECRET/hush-hush-token"


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: Any
    status: int


class Receiver:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode("utf-8", "replace")
                    receiver.posts.append(
                        Post(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The hook's URL; its path plays the secret part of a real webhook URL."""
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    def bodies(self) -> list[Any]:
        with self._lock:
            return [p.body for p in self.posts]

    def wait(self, count: int, timeout: float) -> list[Post]:
        """The posts once there are at least ``count``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.posts)} posts within {timeout} s, wanted {count}")


@contextmanager
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
