"""A real local HTTP receiver for notification tests.

It listens on 127.0.0.1, records every request, answers as scripted (200 by default), counts
2xx answers per `webhook-id` the way a deduplicating receiver would, and can go down and come
back on the same port:

    with Receiver() as receiver:                        # listening; receiver.url is its address
        receiver.answer(503, times=3)                   # the next 3 requests get 503
        receiver.answer(429, times=1, retry_after="1")  # then one 429 with Retry-After: 1
        ...                                             # then 200 again
        receiver.answer(503, times=2, per_id=True)      # 2 failures for each webhook-id
        receiver.answer(500)                            # 500 until recover()
        receiver.recover()                              # forget the script: 200 from now on
        receiver.stop(); receiver.start()               # down (nothing listens), then back up
        assert receiver.delivered_ids == {"id-1": 1}    # exactly once

Pass `secret` (a Standard Webhooks `whsec_...`) to check each request's signature: the result is
`Request.verified`; the answer does not depend on it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from tests.conftest import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered
    verified: bool | None  # the signature checked out; None when the receiver has no secret

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Step:
    status: int
    times: int | None  # None: until recover()
    retry_after: str | None
    delay: float
    per_id: bool
    served: Counter[str] = field(default_factory=Counter)

    def takes(self, webhook_id: str) -> bool:
        """Whether this step answers the request, counting it if so."""
        key = webhook_id if self.per_id else ""
        if self.times is not None and self.served[key] >= self.times:
            return False
        self.served[key] += 1
        return True


class Receiver:
    """A scripted HTTP endpoint; see the module docstring."""

    def __init__(self, port: int | None = None, secret: str | None = None) -> None:
        self.port = port or free_port()
        self._secret = Webhook(secret) if secret else None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._steps: list[_Step] = []
        self._requests: list[Request] = []
        self._delivered: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- up and down -------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Listen on the port (again, after `stop`)."""
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), _handler(self))
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.02,), daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections: clients now get connection refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the script --------------------------------------------------------------------------

    def answer(
        self,
        status: int,
        times: int | None = None,
        *,
        retry_after: str | None = None,
        delay: float = 0.0,
        per_id: bool = False,
    ) -> None:
        """Answer `status` to the next `times` requests (each webhook-id's, with `per_id`), or
        until `recover()`; steps run in the order given, then 200. `delay` seconds before
        answering (longer than a client's timeout: no answer)."""
        with self._lock:
            self._steps.append(_Step(status, times, retry_after, delay, per_id))

    def recover(self) -> None:
        """Drop the script: answer 200 from now on."""
        with self._lock:
            self._steps.clear()

    # -- what arrived ------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered_ids(self) -> Counter[str]:
        """webhook-id -> how many times it was answered 2xx (1 each: exactly once)."""
        with self._lock:
            return Counter(self._delivered)

    @property
    def delivered(self) -> list[Request]:
        """What a deduplicating receiver processes: the first 2xx request of each webhook-id
        (and every 2xx request without one)."""
        seen: set[str] = set()
        kept = []
        for request in self.requests:
            if 200 <= request.status < 300 and request.webhook_id not in seen:
                kept.append(request)
                if request.webhook_id:
                    seen.add(request.webhook_id)
        return kept

    def statuses(self, webhook_id: str) -> list[int]:
        """The answers given to one webhook-id, in order."""
        return [r.status for r in self.requests if r.webhook_id == webhook_id]

    def wait_delivered(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until `count` distinct webhook-ids were answered 2xx."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._delivered) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # -- serving -----------------------------------------------------------------------------

    def _script(self, webhook_id: str) -> tuple[int, str | None, float]:
        with self._lock:
            for step in self._steps:
                if step.takes(webhook_id):
                    return step.status, step.retry_after, step.delay
        return 200, None, 0.0

    def _record(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            if 200 <= request.status < 300 and request.webhook_id:
                self._delivered[request.webhook_id] += 1
            self._changed.notify_all()

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool | None:
        if self._secret is None:
            return None
        try:
            self._secret.verify(body, headers, json_parse=False)
        except Exception:
            return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive connections too, so a stopped receiver really is unreachable."""
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-answer (timeouts, a stop) are expected here."""


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, retry_after, delay = receiver._script(headers.get("webhook-id", ""))
            if delay:
                time.sleep(delay)
            verified = receiver._verify(body, headers)
            receiver._record(Request(self.command, self.path, headers, body, status, verified))
            payload = b"ok" if 200 <= status < 300 else f"scripted {status}".encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on `Receiver.requests` instead."""

    return Handler
