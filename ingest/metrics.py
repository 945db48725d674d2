"""Prometheus metrics of one collector: ingest, write-ahead log, store writes, LLM calls."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LLM_LABELS = ("project", "service", "model", "operation")
OTHER = "_other"


class LabelCap:
    """Caps a metric's series per project (the first label, which keys set, not spans): past
    `limit` label sets of a project, its new ones collapse into (project, `_other`, ...), so
    one tenant's made-up service or model names never crowd out another's series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[tuple[str, ...]]] = defaultdict(set)

    def __call__(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        seen = self._seen[labels[0]]
        if labels in seen:
            return labels
        if len(seen) < self.limit:
            seen.add(labels)
            return labels
        return (labels[0], *(OTHER for _ in labels[1:]))


class BatchHistogram(Collector):
    """A histogram fed a whole batch of values at once (the writer stores thousands per call)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = np.array(buckets, dtype=float)
        self._series: dict[tuple[str, ...], list] = {}
        registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: Sequence[float]) -> None:
        array = np.asarray(values, dtype=float)
        counts = np.bincount(
            np.searchsorted(self.bounds, array, side="left"), minlength=len(self.bounds) + 1
        )
        series = self._series.setdefault(labels, [np.zeros(len(self.bounds) + 1, np.int64), 0.0])
        series[0] += counts
        series[1] += float(array.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in list(self._series.items()):
            cumulative = np.cumsum(counts)
            buckets = [
                (_le(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        yield family


def _le(bound: float) -> str:
    return str(float(bound))


class CollectorMetrics:
    """All metrics live in one registry per app, so tests can run several apps side by side."""

    def __init__(self, max_series: int = 1000) -> None:
        r = self.registry = CollectorRegistry()
        self.cap = LabelCap(max_series)
        self.error_cap = LabelCap(max_series)
        self.requests = Counter(
            "driftline_ingest_requests", "OTLP export requests by HTTP status", ["code"], registry=r
        )
        self.spans_accepted = Counter(
            "driftline_ingest_spans_accepted",
            "Spans acknowledged (durable in the write-ahead log)",
            registry=r,
        )
        self.spans_rejected = Counter(
            "driftline_ingest_spans_rejected", "Spans refused, by reason", ["reason"], registry=r
        )
        self.requests_rejected = Counter(
            "driftline_ingest_requests_rejected",
            "Requests refused before their spans could be counted",
            ["reason"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "driftline_ingest_ack_duration_seconds",
            "Time from request received to durable acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wal_backlog = Gauge(
            "driftline_wal_backlog_bytes", "Acknowledged bytes not yet in the store", registry=r
        )
        self.store_write_seconds = Histogram(
            "driftline_store_write_duration_seconds",
            "Time to write one batch to the store",
            ["table"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_rows = Counter(
            "driftline_store_rows_written", "Rows written to the store", ["table"], registry=r
        )
        self.store_errors = Counter(
            "driftline_store_write_errors", "Failed store writes (retried)", registry=r
        )
        self.dead_letters = Counter(
            "driftline_writer_dead_letter_records",
            "Log records that could not be decoded, kept in <data>/dead-letter/",
            registry=r,
        )
        self.duplicates = Counter(
            "driftline_store_duplicate_spans_skipped",
            "Spans delivered again and not stored twice",
            registry=r,
        )
        self.llm_duration = BatchHistogram(
            "driftline_llm_request_duration_seconds",
            "LLM call duration",
            LLM_LABELS,
            LATENCY_BUCKETS,
            r,
        )
        self.llm_calls = Counter("driftline_llm_calls", "LLM calls stored", LLM_LABELS, registry=r)
        self.llm_tokens = Counter(
            "driftline_llm_tokens", "LLM tokens", [*LLM_LABELS, "type"], registry=r
        )
        self.llm_cost = Counter(
            "driftline_llm_cost_usd", "LLM cost in US dollars", LLM_LABELS, registry=r
        )
        self.llm_errors = Counter(
            "driftline_llm_errors", "LLM calls that failed", [*LLM_LABELS, "error_type"], registry=r
        )

    def track_backlog(self, backlog: Callable[[], int]) -> None:
        self.wal_backlog.set_function(backlog)

    def observe_llm_calls(self, calls: pa.Table) -> None:
        """Aggregate a stored batch per label set, then update each series once."""
        columns = {
            name: calls.column(name).to_pylist()
            for name in ("project_id", "service", "response_model", "operation", "duration_ms",
                         "input_tokens", "output_tokens", "cost_usd", "status_code", "error_type")
        }  # fmt: skip
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, key in enumerate(
            zip(columns["project_id"], columns["service"], columns["response_model"],
                columns["operation"], strict=True)
        ):  # fmt: skip
            groups[self.cap(key)].append(i)
        for labels, rows in groups.items():
            self.llm_calls.labels(*labels).inc(len(rows))
            self.llm_duration.observe_many(labels, [columns["duration_ms"][i] / 1000 for i in rows])
            self.llm_tokens.labels(*labels, "input").inc(
                sum(columns["input_tokens"][i] for i in rows)
            )
            self.llm_tokens.labels(*labels, "output").inc(
                sum(columns["output_tokens"][i] for i in rows)
            )
            self.llm_cost.labels(*labels).inc(sum(columns["cost_usd"][i] for i in rows))
            errors: dict[str, int] = defaultdict(int)
            for i in rows:
                if columns["status_code"][i] == "error" or columns["error_type"][i]:
                    errors[columns["error_type"][i] or "_OTHER"] += 1
            for error_type, count in errors.items():
                _, capped = self.error_cap((labels[0], error_type))
                self.llm_errors.labels(*labels, capped).inc(count)
