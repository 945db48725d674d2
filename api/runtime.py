"""Everything one collector process holds while it runs, and the errors its routes raise."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fastapi import Request

from driftline.alerts.engine import AlertLoop
from driftline.api.config import Settings
from driftline.api.ratelimit import RateLimiter
from driftline.evaluators.runner import EvaluatorLoop
from driftline.ingest.mapping import SpanDecoder
from driftline.ingest.metrics import CollectorMetrics
from driftline.ingest.wal import Payload
from driftline.store import Store
from driftline.store.keys import KeyChecker

if TYPE_CHECKING:  # the detectors extra (torch) may not be installed
    from driftline.detectors.scheduler import DetectorLoop


class ApiError(Exception):
    """An HTTP error whose message tells the caller what to fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class SpanWriter(Protocol):
    """What acknowledges span exports and puts them in the store: the write-ahead log and its
    writer (`ingest.writer.Writer`, ack = "log"), or the store itself
    (`ingest.committer.StoreCommitter`, ack = "store")."""

    decoder: SpanDecoder
    store_healthy: bool

    def submit(self, payload: Payload) -> Future[None]:
        """A request's record; the future is done once it is acknowledged."""

    def backlog_bytes(self) -> int:
        """Acknowledged bytes not yet in the store."""

    def start(self) -> None: ...

    def stop(self, drain_timeout: float = 30.0) -> None: ...

    def close(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    store: Store
    writer: SpanWriter
    keys: KeyChecker
    limiter: RateLimiter  # every request, per key
    heavy_limiter: RateLimiter  # searches and dataset rebuilds, per project
    metrics: CollectorMetrics
    metrics_token: str | None = None  # what /metrics requires, read once at start
    detectors: DetectorLoop | None = None  # None: turned off, or the detectors extra is missing
    alerts: AlertLoop | None = None  # None: turned off, or no rules file
    evaluators: EvaluatorLoop | None = None  # None: none configured, or turned off


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt
