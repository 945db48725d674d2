"""Senders that POST one rendered notification: a Standard Webhooks signed webhook, a Slack
incoming webhook, an Alertmanager `/api/v2/alerts` push. A sender never raises: every outcome,
including no answer at all, comes back as a `Delivery`."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx
from standardwebhooks import Webhook

USER_AGENT = "driftline-alerts"
_RETRYABLE = frozenset({408, 425, 429})
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_ERROR_CHARS = 200


@dataclass(frozen=True)
class Message:
    id: str  # stable across retries; it is the Standard Webhooks `webhook-id`
    project: str
    receiver: str  # receiver name as configured
    kind: str  # "webhook" | "slack" | "alertmanager" | "retrain"
    group_key: str
    body: bytes  # the exact bytes to POST (JSON), rendered once at enqueue time
    created_at: float  # epoch seconds


@dataclass(frozen=True)
class Delivery:
    status_code: int | None  # None when no HTTP answer (timeout, connection refused)
    error: str  # "" on success; a short reason otherwise, without secrets or URLs
    retry_after: float | None  # seconds, from Retry-After; None if absent
    seconds: float  # duration of the attempt

    @property
    def ok(self) -> bool:
        """The receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """No answer, 408, 425, 429 or 5xx; any other failure is permanent."""
        if self.status_code is None:
            return True
        return self.status_code in _RETRYABLE or self.status_code >= 500


class Sender(Protocol):
    def send(self, message: Message) -> Delivery: ...


class WebhookSender:
    """A generic webhook, signed with Standard Webhooks headers when a secret is given."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        secret: str | None,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = url
        self._signer = Webhook(secret) if secret else None
        self._timeout = timeout
        self._clock = clock

    def send(self, message: Message) -> Delivery:
        """POST the body; the timestamp (and signature) are of this attempt, the id is stable."""
        now = self._clock()
        headers = {**_JSON_HEADERS, "webhook-id": message.id, "webhook-timestamp": str(int(now))}
        if self._signer is not None:
            at = datetime.fromtimestamp(int(now), tz=UTC)
            headers["webhook-signature"] = self._signer.sign(message.id, at, message.body.decode())
        return _post(self._client, self._url, message.body, headers, self._timeout, now)


class SlackSender:
    """A Slack incoming webhook; its URL is the secret, so it never appears in errors or logs."""

    def __init__(self, client: httpx.Client, url: str, timeout: float) -> None:
        self._client = client
        self._url = url
        self._timeout = timeout

    def send(self, message: Message) -> Delivery:
        """POST the rendered Slack message."""
        return _post(self._client, self._url, message.body, _JSON_HEADERS, self._timeout)


class AlertmanagerSender:
    """Pushes alerts to an Alertmanager through its v2 API."""

    def __init__(self, client: httpx.Client, url: str, timeout: float) -> None:
        self._client = client
        self._url = f"{url.rstrip('/')}/api/v2/alerts"
        self._timeout = timeout

    def send(self, message: Message) -> Delivery:
        """POST the rendered list of alerts."""
        return _post(self._client, self._url, message.body, _JSON_HEADERS, self._timeout)


_JSON_HEADERS = {"content-type": "application/json", "user-agent": USER_AGENT}


def _post(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    now: float | None = None,
) -> Delivery:
    """One POST, its outcome as a Delivery; any exception becomes a Delivery with no status."""
    start = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=dict(headers), timeout=timeout)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Delivery(None, _scrub(reason, url), None, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    code = response.status_code
    if 200 <= code < 300:
        return Delivery(code, "", None, seconds)
    when = time.time() if now is None else now
    retry_after = _retry_after(response.headers.get("retry-after"), when)
    detail = " ".join(response.text[:1000].split())
    error = f"HTTP {code}: {detail}" if detail else f"HTTP {code}"
    return Delivery(code, _scrub(error, url), retry_after, seconds)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _scrub(text: str, url: str) -> str:
    """A short one-line reason with no URL in it: URLs can carry tokens (Slack) or credentials."""
    text = " ".join(text.replace(url, "<url>").split())
    return _URL.sub("<url>", text)[:_ERROR_CHARS]
