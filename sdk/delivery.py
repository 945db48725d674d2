"""Send encoded payloads to the collector and say what to do with each answer."""

from __future__ import annotations

import enum
import gzip
from dataclasses import dataclass

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from driftline.sdk.config import Config

TRACES_PATH = "/v1/traces"
FEEDBACK_PATH = "/api/feedback"
_RETRYABLE = {408, 429, 500, 502, 503, 504}
_CONFIG_ERRORS = {401, 403, 404}


@dataclass(frozen=True)
class Payload:
    """One request body the collector has not yet acknowledged."""

    path: str
    body: bytes
    content_type: str
    items: int  # spans or feedback records in it, for the dropped counter


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # collector down, overloaded or refusing our key: keep the payload
    REJECTED = "rejected"  # the collector will never take this payload: drop it, counted


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None
    rejected: int = 0  # items the collector refused within an accepted payload


class Transport:
    """HTTP POSTs to the collector with a bounded timeout; never raises."""

    def __init__(self, config: Config) -> None:
        self._base = config.endpoint.rstrip("/")
        self._timeout = config.export_timeout
        self._gzip = config.compression == "gzip"
        self._session = requests.Session()
        # Proxies from the environment are read once here, not (with .netrc) on every request.
        self._session.proxies = requests.utils.get_environ_proxies(self._base)
        self._session.trust_env = False
        self._session.headers.update(dict(config.headers))
        self._session.headers["User-Agent"] = "driftline-sdk-python"
        if config.api_key:
            self._session.headers["Authorization"] = f"Bearer {config.api_key}"

    def send(self, payload: Payload, timeout: float | None = None) -> Answer:
        headers = {"Content-Type": payload.content_type}
        body = payload.body
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._session.post(
                self._base + payload.path,
                data=body,
                headers=headers,
                timeout=self._timeout if timeout is None else max(timeout, 0.001),
            )
        except requests.RequestException as exc:
            return Answer(Outcome.RETRY, f"collector unreachable: {type(exc).__name__}")
        return _classify(payload, response)

    def close(self) -> None:
        self._session.close()


def _classify(payload: Payload, response: requests.Response) -> Answer:
    status = response.status_code
    if 200 <= status < 300:
        return _partial_success(payload, response)
    detail = f"HTTP {status}: {response.text[:300]!r}"
    if status in _RETRYABLE or status in _CONFIG_ERRORS:
        return Answer(Outcome.RETRY, detail, _retry_after(response.headers.get("Retry-After")))
    return Answer(Outcome.REJECTED, detail)


def _partial_success(payload: Payload, response: requests.Response) -> Answer:
    """OTLP partial success: the request was taken but some spans in it were not."""
    if payload.path != TRACES_PATH or not response.content:
        return Answer(Outcome.SENT)
    reply = ExportTraceServiceResponse()
    try:
        reply.ParseFromString(response.content)
    except Exception:
        return Answer(Outcome.SENT)
    partial = reply.partial_success
    return Answer(Outcome.SENT, partial.error_message[:500], rejected=partial.rejected_spans)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), 300.0) if value else None
    except ValueError:
        return None
