"""The writer: drains the write-ahead log into the store in batches, never twice.

A batch is committed in the log only after the store has it. A crash in between replays the
batch; rows whose (trace_id, span_id) the store already has are skipped, so nothing is doubled.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from driftline.collector import envelope
from driftline.collector.genai import SpanMapper, attributes, is_llm_call
from driftline.collector.metrics import CollectorMetrics
from driftline.collector.wal import Record, WriteAheadLog
from driftline.store import Store, StoreError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

log = logging.getLogger(__name__)

_TS = pa.timestamp("ns", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())
_S = pa.string()
_COMMON = [
    ("project_id", _S), ("trace_id", _S), ("span_id", _S), ("parent_span_id", _S),
    ("start_time", _TS), ("end_time", _TS), ("duration_ms", pa.float64()), ("service", _S),
    ("service_version", _S), ("environment", _S), ("span_name", _S), ("status_code", _S),
    ("status_message", _S), ("attributes", _MAP), ("resource_attributes", _MAP),
]  # fmt: skip
LLM_CALLS_SCHEMA = pa.schema([
    *_COMMON,
    ("operation", _S), ("provider", _S), ("request_model", _S), ("response_model", _S),
    ("input_messages", _S), ("output_messages", _S), ("input_text", _S), ("output_text", _S),
    ("input_tokens", pa.uint32()), ("output_tokens", pa.uint32()), ("total_tokens", pa.uint32()),
    ("cost_usd", pa.float64()), ("finish_reasons", pa.list_(_S)), ("error_type", _S),
    ("conversation_id", _S), ("user_id", _S), ("agent_name", _S),
])  # fmt: skip
SPANS_SCHEMA = pa.schema([
    *_COMMON, ("kind", _S), ("scope_name", _S), ("events", _S), ("links", _S),
])  # fmt: skip


def to_arrow(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        values = [row[f.name] for row in rows]
        if f.type == _TS:
            arrays.append(pa.array(values, pa.int64()).cast(_TS))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass
class Batch:
    """Rows decoded from a run of log records, deduplicated within the run."""

    llm_calls: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    duplicates: int = 0

    def add(self, mapper: SpanMapper, project: str, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name
                for span in scope_spans.spans:
                    key = (project, span.trace_id.hex(), span.span_id.hex())
                    if key in self.seen:
                        self.duplicates += 1
                        continue
                    self.seen.add(key)
                    attrs = attributes(span.attributes)
                    if is_llm_call(attrs):
                        self.llm_calls.append(mapper.llm_row(project, span, resource, attrs))
                    else:
                        self.spans.append(mapper.span_row(project, span, resource, scope, attrs))


def decode_records(mapper: SpanMapper, records: Sequence[Record]) -> Batch:
    batch = Batch()
    for record in records:
        project, otlp = envelope.unpack(record.payload)
        request = ExportTraceServiceRequest()
        request.ParseFromString(otlp)  # validated at ingest; a failure here is a bug, and loud
        batch.add(mapper, project, request)
    return batch


def existing_keys(store: Store, table: str, rows: Sequence[dict[str, Any]]) -> set[tuple[str, ...]]:
    """The (project, trace, span) keys among `rows` that the table already holds."""
    if not rows:
        return set()
    projects = sorted({r["project_id"] for r in rows})
    trace_ids = sorted({r["trace_id"] for r in rows})  # lower-case hex: safe to inline
    found = store.query(
        f"SELECT project_id, trace_id, span_id FROM {table} "
        "WHERE project_id IN {projects:Array(String)} "
        "AND start_time BETWEEN fromUnixTimestamp64Nano({lo:Int64}, 'UTC') "
        "AND fromUnixTimestamp64Nano({hi:Int64}, 'UTC') "
        f"AND trace_id IN ({','.join(repr(t) for t in trace_ids)})",
        {
            "projects": projects,
            "lo": min(r["start_time"] for r in rows),
            "hi": max(r["start_time"] for r in rows),
        },
    )
    return {(f["project_id"], f["trace_id"], f["span_id"]) for f in found}


class Writer:
    """A background thread moving acknowledged spans from the log into the store."""

    def __init__(
        self,
        wal: WriteAheadLog,
        store: Store,
        mapper: SpanMapper,
        metrics: CollectorMetrics,
        batch_bytes: int,
        flush_interval: float,
    ) -> None:
        self.wal, self.store, self.mapper, self.metrics = wal, store, mapper, metrics
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.store_healthy = True
        self._drain_deadline = float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Store what is left in the log (up to the timeout), then stop."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        position = self.wal.checkpoint
        while True:
            stopping = self._stop.is_set()
            if stopping and (
                self.wal.backlog_bytes() == 0 or time.monotonic() > self._drain_deadline
            ):
                return
            if not self.wal.wait_for_data(position, timeout=0.2):
                continue
            if not stopping and self.wal.backlog_bytes() < self.batch_bytes:
                self._stop.wait(self.flush_interval)  # let a small batch grow a little
            records = self.wal.read(position, self.batch_bytes)
            if not records:
                continue
            batch = decode_records(self.mapper, records)
            if not self._store(batch):
                continue  # stopping while the store is down: the log keeps the batch
            position = records[-1].end
            self.wal.commit(position)

    def _store(self, batch: Batch) -> bool:
        delay = 0.1
        while True:
            try:
                self.write(batch)
                self.store_healthy = True
                return True
            except StoreError as exc:
                self.store_healthy = False
                self.metrics.store_errors.inc()
                log.warning("store write failed, retrying in %.1fs: %s", delay, exc)
                if self._stop.is_set() and time.monotonic() > self._drain_deadline:
                    return False
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    def write(self, batch: Batch) -> None:
        """Insert the batch's rows the store does not hold yet."""
        self.metrics.duplicates.inc(batch.duplicates)
        for table, rows, schema in (
            ("llm_calls", batch.llm_calls, LLM_CALLS_SCHEMA),
            ("spans", batch.spans, SPANS_SCHEMA),
        ):
            if not rows:
                continue
            started = time.perf_counter()
            known = existing_keys(self.store, table, rows)
            if known:
                self.metrics.duplicates.inc(len(known))
                rows = [
                    r for r in rows if (r["project_id"], r["trace_id"], r["span_id"]) not in known
                ]
            if rows:
                self.store.insert_arrow(table, to_arrow(rows, schema))
            self.metrics.store_write_seconds.labels(table).observe(time.perf_counter() - started)
            self.metrics.store_rows.labels(table).inc(len(rows))
            if table == "llm_calls":
                self.metrics.observe_llm_calls(rows)
