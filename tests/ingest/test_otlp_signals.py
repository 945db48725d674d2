"""`/v1/metrics` and `/v1/logs`: an app's OpenTelemetry SDK exports its GenAI metrics and its
log events to the collector without an error, and they are stored once, under the key's
project, with the same key checks and size limits as traces."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from driftline.store import Store
from tests.sdk.conftest import LiveCollector, start_live

RESOURCE = Resource.create({"service.name": "support-bot"})


@pytest.fixture
def live(store: Store, tmp_path: Path) -> Iterator[LiveCollector]:
    collector = start_live(tmp_path / "data", store)
    yield collector
    collector.stop()


def genai_metrics() -> MetricsData:
    """What a GenAI instrumentation records for two chat calls (OTel GenAI metric names)."""
    reader = InMemoryMetricReader()
    meter = MeterProvider(resource=RESOURCE, metric_readers=[reader]).get_meter("openai-instr")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    for used, seconds in ((120, 0.8), (80, 1.4)):
        labels = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
        tokens.record(used, {**labels, "gen_ai.token.type": "input"})
        duration.record(seconds, labels)
    data = reader.get_metrics_data()
    assert data is not None
    return data


def stored(live: LiveCollector, table: str) -> list[dict[str, Any]]:
    return live.store.query(f"SELECT * FROM {table} FINAL ORDER BY name" if table == "otel_metrics"
                            else f"SELECT * FROM {table} FINAL ORDER BY time")  # fmt: skip


def test_the_sdk_exports_genai_metrics_and_they_are_stored_once(live: LiveCollector) -> None:
    exporter = OTLPMetricExporter(
        endpoint=live.url + "/v1/metrics", headers={"authorization": f"Bearer {live.ingest_key}"}
    )
    data = genai_metrics()
    assert exporter.export(data) is MetricExportResult.SUCCESS
    assert exporter.export(data) is MetricExportResult.SUCCESS  # a retry of the same points
    rows = stored(live, "otel_metrics")
    assert [(r["name"], r["kind"], r["unit"], r["count"], r["value"]) for r in rows] == [
        ("gen_ai.client.operation.duration", "histogram", "s", 2, pytest.approx(2.2)),
        ("gen_ai.client.token.usage", "histogram", "{token}", 2, 200.0),
    ]
    assert {r["project_id"] for r in rows} == {"alpha"}
    assert dict(rows[1]["attributes"])["gen_ai.request.model"] == "gpt-4o-mini"
    assert rows[1]["service"] == "support-bot" and rows[1]["temporality"] == "cumulative"
    assert sum(rows[1]["bucket_counts"]) == 2 and len(rows[1]["bounds"]) + 1 == len(
        rows[1]["bucket_counts"]
    )
    listed = httpx.get(live.url + "/api/otel-signals",
                       headers={"authorization": f"Bearer {live.read_key}"}).json()  # fmt: skip
    assert [(i["signal"], i["name"], i["points"]) for i in listed["items"]] == [
        ("metric", "gen_ai.client.operation.duration", 1),
        ("metric", "gen_ai.client.token.usage", 1),
    ]


def test_the_sdk_exports_log_events_with_their_trace(live: LiveCollector) -> None:
    exporter = OTLPLogExporter(
        endpoint=live.url + "/v1/logs", headers={"authorization": f"Bearer {live.ingest_key}"}
    )
    provider = LoggerProvider(resource=RESOURCE)
    results: list[Any] = []

    class Recording(SimpleLogRecordProcessor):
        def on_emit(self, record: Any) -> None:
            results.append(exporter.export([record]))

    provider.add_log_record_processor(Recording(exporter))
    logger = provider.get_logger("openai-instr")
    call = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                       is_remote=False, trace_flags=TraceFlags(1))  # fmt: skip
    logger.emit(event_name="gen_ai.user.message", body={"content": "Where is my parcel?"},
                severity_number=SeverityNumber.INFO, attributes={"gen_ai.system": "openai"},
                timestamp=time.time_ns(),
                context=trace.set_span_in_context(NonRecordingSpan(call)))  # fmt: skip
    assert results == [LogRecordExportResult.SUCCESS]
    [row] = stored(live, "otel_logs")
    assert row["event_name"] == "gen_ai.user.message" and row["service"] == "support-bot"
    assert (row["trace_id"], row["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert orjson.loads(row["body"]) == {"content": "Where is my parcel?"}
    assert dict(row["attributes"]) == {"gen_ai.system": "openai"}


def test_json_gzip_keys_and_limits(live: LiveCollector) -> None:
    now = time.time_ns()
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "gen_ai.client.token.usage", "unit": "{token}",
        "sum": {"aggregationTemporality": 1, "isMonotonic": True, "dataPoints": [
            {"asInt": "42", "timeUnixNano": str(now), "exemplars": [
                {"spanId": "b7ad6b7169203331", "traceId": "0af7651916cd43dd8448eb211c80319c"}]},
            {"asInt": "1", "timeUnixNano": "0"},
        ]}}]}]}]}  # fmt: skip
    headers = {"authorization": f"Bearer {live.ingest_key}", "content-type": "application/json",
               "content-encoding": "gzip"}  # fmt: skip
    sent = httpx.post(live.url + "/v1/metrics", content=gzip.compress(orjson.dumps(body)),
                      headers=headers)  # fmt: skip
    assert sent.status_code == 200, sent.text
    assert sent.json()["partialSuccess"]["rejectedDataPoints"] == "1"  # the point without a time
    [row] = stored(live, "otel_metrics")
    assert (row["kind"], row["value"], row["temporality"]) == ("sum", 42.0, "delta")

    no_key = httpx.post(live.url + "/v1/logs", content=b"x" * 10,
                        headers={"content-type": "application/x-protobuf"})  # fmt: skip
    assert no_key.status_code == 401
    assert "missing API key" in Status.FromString(no_key.content).message
    read_key = httpx.post(live.url + "/v1/metrics", content=b"{}",
                          headers={**headers, "authorization": f"Bearer {live.read_key}",
                                   "content-encoding": "identity"})  # fmt: skip
    assert read_key.status_code == 403
    broken = httpx.post(live.url + "/v1/logs", content=b"{not json",
                        headers={**headers, "content-encoding": "identity"})  # fmt: skip
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["message"]
    bomb = gzip.compress(b"\0" * (80 * 1024 * 1024))
    too_big = httpx.post(live.url + "/v1/metrics", content=bomb,
                         headers={**headers, "content-type": "application/x-protobuf"})  # fmt: skip
    assert too_big.status_code == 413
