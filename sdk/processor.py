"""The span processor that ships spans and feedback to the collector from a background thread.

The app's thread only appends to a bounded queue (`on_end`); a full queue drops the span and
counts it. Everything that touches the network, encodes or masks runs on the worker thread, so
a collector that is down, slow or failing never delays or breaks the app. Payloads the collector
cannot take yet wait in a backlog (memory, or a spool folder that outlives the process).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from driftline.sdk.backlog import Backlog, DiskSpool, MemoryBacklog
from driftline.sdk.config import Config
from driftline.sdk.delivery import FEEDBACK_PATH, TRACES_PATH, Outcome, Payload, Transport
from driftline.sdk.encoding import encode_request
from driftline.sdk.sampling import keeps_trace

logger = logging.getLogger("driftline.sdk")

_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
_MIN_BACKOFF, _MAX_BACKOFF = 1.0, 60.0
_LOG_INTERVAL = 60.0
_PROTOBUF = "application/x-protobuf"


@dataclass
class Stats:
    """What happened to the spans and feedback handed to the SDK since `init`."""

    spans_sent: int = 0
    spans_dropped: int = 0
    spans_rejected: int = 0  # accepted requests in which the collector refused some spans
    feedback_sent: int = 0
    feedback_dropped: int = 0
    payloads_backlogged: int = 0
    export_failures: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


class ThrottledLog:
    """Log each kind of problem at most once per interval, with how often it happened since."""

    def __init__(self, interval: float = _LOG_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, count: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self._since[key] = self._since.get(key, 0) + count
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return
            self._last[key] = now
            total = self._since.pop(key)
        logger.warning(
            "%s (%d since the last report; logged at most once a minute)", message, total
        )


class ExportProcessor(SpanProcessor):
    def __init__(self, config: Config, sample_in_processor: bool = False) -> None:
        self._config = config
        self._sample_rate = config.sample_rate if sample_in_processor else 1.0
        self.stats = Stats()
        self._log = ThrottledLog()
        self._backlog: Backlog = (
            DiskSpool(config.spool_dir, config.spool_max_bytes)
            if config.spool_dir is not None
            else MemoryBacklog(config.max_backlog_bytes)
        )
        self._start()
        self_ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart(self_ref))

    def _start(self) -> None:
        self._spans: deque[ReadableSpan] = deque()
        self._feedback: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._io = threading.Lock()  # one thread at a time sends and touches the backlog
        self._stopping = False
        self._transport = Transport(self._config)
        self._retry_at = 0.0
        self._backoff = _MIN_BACKOFF
        self._backlog_full = False  # set when the backlog refused a payload, until it drains
        self._worker = threading.Thread(target=self._run, name="driftline-export", daemon=True)
        self._worker.start()

    # -- the app's side: never blocks, never raises -------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping:
            self._drop("spans", 1, "ended after shutdown")
            return
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._sample_rate < 1.0 and not keeps_trace(context.trace_id, self._sample_rate):
            return
        if len(self._spans) >= self._config.max_queue_size:
            self._drop("spans", 1, "queue full")
            return
        self._spans.append(span)
        if len(self._spans) >= self._config.max_export_batch_size:
            self._wake.set()

    def add_feedback(self, record: dict[str, Any]) -> None:
        if self._stopping or len(self._feedback) >= self._config.max_queue_size:
            self._drop("feedback", 1, "stopped" if self._stopping else "queue full")
            return
        self._feedback.append(record)
        self._wake.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send everything queued now; True when nothing is left waiting."""
        if self._stopping:
            return self._idle()
        done = threading.Event()
        self._flushes.append(done)
        self._wake.set()
        done.wait(timeout_millis / 1000)
        return self._idle()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the worker, try to send what is left, keep the rest in the spool if there is one."""
        if self._stopping:
            return
        timeout = self._config.flush_at_exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._worker.join(max(deadline - time.monotonic(), 0.0))
        if self._io.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                self._pass(deadline, force=True)
                self._keep_or_drop_leftovers()
            finally:
                otel_context.detach(token)
                self._io.release()
        self._transport.close()

    # -- the worker's side ---------------------------------------------------------------------

    def _run(self) -> None:
        # HTTP instrumentation in the app (requests, urllib3) must not trace our own exports.
        otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        while not self._stopping:
            timed_out = not self._wake.wait(self._config.schedule_delay)
            self._wake.clear()
            if self._stopping:
                break
            flushes, self._flushes = self._flushes, []
            with self._io:
                try:
                    self._pass(deadline=None, force=bool(flushes), partial=timed_out)
                except Exception:  # a bug here must not kill the thread that ships spans
                    logger.exception("driftline export pass failed")
            for done in flushes:
                done.set()

    def _pass(self, deadline: float | None, force: bool, partial: bool = True) -> None:
        """Send the backlog (oldest first), then what is queued: full batches only, unless the
        schedule delay is up or a flush asks for everything (fewer, larger requests)."""
        self._send_backlog(deadline, force)
        partial = partial or force
        while self._spans and not _past(deadline):
            if not partial and len(self._spans) < self._batch:
                break
            batch = [self._spans.popleft() for _ in range(min(len(self._spans), self._batch))]
            if self._backlog_full and not force:  # encoding what cannot be kept is wasted CPU
                self._drop("spans", len(batch), self._backlog_full_reason)
                continue
            for payload in self._span_payloads(batch):
                self._deliver(payload, deadline, force)
        while self._feedback and not _past(deadline):
            records = [self._feedback.popleft() for _ in range(min(len(self._feedback), 1000))]
            self._deliver(_feedback_payload(records), deadline, force)

    @property
    def _batch(self) -> int:
        return self._config.max_export_batch_size

    def _deliver(self, payload: Payload, deadline: float | None, force: bool) -> None:
        if len(self._backlog) or (not force and time.monotonic() < self._retry_at):
            self._keep(payload)
            return
        if not self._send(payload, deadline):
            self._keep(payload)

    def _send_backlog(self, deadline: float | None, force: bool) -> None:
        if not force and time.monotonic() < self._retry_at:
            return
        while not _past(deadline):
            payload = self._backlog.oldest()
            if payload is None or not self._send(payload, deadline):
                return
            self._backlog.remove_oldest()
            self._backlog_full = False

    def _send(self, payload: Payload, deadline: float | None) -> bool:
        """Try once; False when the payload should be kept for later."""
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        answer = self._transport.send(payload, timeout)
        kind = _kind(payload)
        if answer.outcome is Outcome.SENT:
            self._backoff = _MIN_BACKOFF
            self._retry_at = 0.0
            if kind == "spans":
                self.stats.spans_sent += payload.items - answer.rejected
                if answer.rejected:
                    self.stats.spans_rejected += answer.rejected
                    self._log.warning(
                        "rejected", f"collector refused {answer.rejected} span(s): {answer.detail}"
                    )
            else:
                self.stats.feedback_sent += payload.items
            return True
        self.stats.export_failures += 1
        if answer.outcome is Outcome.REJECTED:
            self._drop(kind, payload.items, f"collector refused the payload ({answer.detail})")
            return True
        wait = answer.retry_after if answer.retry_after is not None else self._backoff
        self._retry_at = time.monotonic() + wait
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        self._log.warning(
            "retry", f"driftline collector did not take {kind}, will retry: {answer.detail}"
        )
        return False

    def _keep(self, payload: Payload) -> None:
        if self._backlog.put(payload):
            self.stats.payloads_backlogged += 1
        else:
            self._backlog_full = True
            self._drop(_kind(payload), payload.items, self._backlog_full_reason)

    @property
    def _backlog_full_reason(self) -> str:
        return f"{'spool folder' if self._config.spool_dir else 'memory backlog'} full"

    def _keep_or_drop_leftovers(self) -> None:
        leftovers: list[Payload] = []
        if self._spans:
            leftovers += self._span_payloads(list(self._spans))
            self._spans.clear()
        if self._feedback:
            leftovers.append(_feedback_payload(list(self._feedback)))
            self._feedback.clear()
        for payload in leftovers:
            self._keep(payload)
        if isinstance(self._backlog, MemoryBacklog):
            while (unsent := self._backlog.oldest()) is not None:
                self._backlog.remove_oldest()
                self._drop(_kind(unsent), unsent.items, "unsent at shutdown (no spool_dir set)")

    def _span_payloads(self, spans: Sequence[ReadableSpan]) -> list[Payload]:
        """Encoded, masked payloads of at most 4 MiB each (halving the batch until they fit)."""
        try:
            body = encode_request(spans, self._config.mask)
        except Exception as exc:
            self._drop("spans", len(spans), f"could not encode spans: {exc!r}")
            return []
        if len(body) > _MAX_PAYLOAD_BYTES and len(spans) > 1:
            half = len(spans) // 2
            return self._span_payloads(spans[:half]) + self._span_payloads(spans[half:])
        return [Payload(TRACES_PATH, body, _PROTOBUF, len(spans))]

    def _drop(self, kind: str, count: int, reason: str) -> None:
        if kind == "spans":
            self.stats.spans_dropped += count
        else:
            self.stats.feedback_dropped += count
        by_reason = self.stats.dropped_by_reason
        by_reason[reason] = by_reason.get(reason, 0) + count
        self._log.warning(f"drop:{kind}", f"driftline dropped {kind}: {reason}", count)

    def _idle(self) -> bool:
        return not self._spans and not self._feedback and not len(self._backlog)

    def snapshot(self) -> dict[str, Any]:
        stats = asdict(self.stats)
        stats.update(queued_spans=len(self._spans), backlog_payloads=len(self._backlog))
        return stats


def _restart(ref: Callable[[], ExportProcessor | None]) -> None:
    """In a forked child the worker thread is gone; start a fresh one with empty queues."""
    processor = ref()
    if processor is not None and not processor._stopping:
        processor._start()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _kind(payload: Payload) -> str:
    return "spans" if payload.path == TRACES_PATH else "feedback"


def _feedback_payload(records: list[dict[str, Any]]) -> Payload:
    body = json.dumps(records, separators=(",", ":")).encode()
    return Payload(FEEDBACK_PATH, body, "application/json", len(records))
