"""The webhook receiver an on-call team would run: it takes driftline's Alertmanager-style
notifications and checks each one's Standard Webhooks signature with the shared secret."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from driftline.demo.local_http import LocalServer, Server


@dataclass(frozen=True)
class Notification:
    webhook_id: str
    body: dict[str, Any]
    verified: bool

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.body.get("alerts") or [])


class WebhookReceiver(LocalServer):
    """Listens on 127.0.0.1 in a thread: `with WebhookReceiver() as hook: hook.url`."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self._webhook = Webhook(self.secret)
        self._lock = threading.Lock()
        self._received: list[Notification] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/driftline"

    @property
    def received(self) -> list[Notification]:
        """Each notification once (a retry repeats its webhook-id), in arrival order."""
        with self._lock:
            seen: dict[str, Notification] = {}
            for n in self._received:
                seen.setdefault(n.webhook_id, n)
            return list(seen.values())

    def take(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            self._webhook.verify(body, headers, json_parse=False)
            verified = True
        except WebhookVerificationError:
            verified = False
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        with self._lock:
            self._received.append(Notification(headers.get("webhook-id", ""), parsed, verified))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.owner.take(body, headers)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo reports what arrived."""
