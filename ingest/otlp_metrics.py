"""OTLP/HTTP metric exports (`POST /v1/metrics`): every data point of gauges, sums, histograms,
exponential histograms and summaries as a row of `otel_metrics` (GenAI clients export
`gen_ai.client.token.usage` and `gen_ai.client.operation.duration` as histograms)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from driftline.ingest import otlp

_TEMPORALITY = {
    AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA: "delta",
    AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}
_MAX_TIME = 2**63 - 1  # ClickHouse DateTime64(9) ends in 2262


def decode(
    body: bytes, media: str, encoding: str | None, limit: int
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    otlp.parse_into(request, otlp.decompress(body, encoding, limit), media, "metric", _no_exemplars)
    return request


def rows(request: ExportMetricsServiceRequest) -> tuple[list[dict[str, Any]], int, str]:
    """The request's data points as rows, and how many were rejected (and why, the first)."""
    out: list[dict[str, Any]] = []
    rejected, first = 0, ""
    for rm in request.resource_metrics:
        resource = otlp.text_map(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in _points(metric):
                    if not 0 < point["time"] <= _MAX_TIME or point["start_time"] > _MAX_TIME:
                        rejected += 1
                        first = first or f"metric {metric.name!r}: a point has an invalid time"
                        continue
                    point.update(
                        service=resource.get("service.name", ""), resource=resource,
                        scope=sm.scope.name, name=metric.name, unit=metric.unit,
                    )  # fmt: skip
                    point["series"] = _series(point)
                    out.append(point)
    return out, rejected, first


def response(rejected: int, message: str, media: str) -> bytes:
    reply = ExportMetricsServiceResponse()
    if rejected:
        reply.partial_success.rejected_data_points = rejected
        reply.partial_success.error_message = message
    return otlp.encode(reply, media)


def _points(metric: Metric) -> Iterator[dict[str, Any]]:
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        data = getattr(metric, kind)
        temporality = _TEMPORALITY.get(data.aggregation_temporality, "") if kind == "sum" else ""
        for p in data.data_points:
            number = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            yield _point(kind, temporality, p, value=number)
    elif kind == "histogram":
        temporality = _TEMPORALITY.get(metric.histogram.aggregation_temporality, "")
        for h in metric.histogram.data_points:
            yield _point(kind, temporality, h, value=h.sum, count=h.count,
                         bucket_counts=list(h.bucket_counts), bounds=list(h.explicit_bounds),
                         min=h.min if h.HasField("min") else None,
                         max=h.max if h.HasField("max") else None)  # fmt: skip
    elif kind == "exponential_histogram":
        temporality = _TEMPORALITY.get(metric.exponential_histogram.aggregation_temporality, "")
        for e in metric.exponential_histogram.data_points:
            yield _point(kind, temporality, e, value=e.sum, count=e.count,
                         min=e.min if e.HasField("min") else None,
                         max=e.max if e.HasField("max") else None)  # fmt: skip
    elif kind == "summary":
        for s in metric.summary.data_points:
            yield _point(kind, "", s, value=s.sum, count=s.count)


def _point(kind: str, temporality: str, p: Any, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "temporality": temporality,
        "attributes": otlp.text_map(p.attributes),
        "start_time": p.start_time_unix_nano,
        "time": p.time_unix_nano,
        "count": 0,
        "bucket_counts": [],
        "bounds": [],
        "min": None,
        "max": None,
        **fields,
    }


def _series(point: dict[str, Any]) -> int:
    """One series: the metric, its attributes, resource and scope. With the times, what makes
    a retried export's point the same row, stored once."""
    key = orjson.dumps(
        [point["name"], point["scope"], point["attributes"], point["resource"]],
        option=orjson.OPT_SORT_KEYS,
    )
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def _no_exemplars(document: dict[str, Any]) -> dict[str, Any]:
    """Exemplars carry hex ids protobuf's JSON mapping cannot read; they are not stored."""
    for i, rm in enumerate(otlp.json_list(document, "resourceMetrics", "")):
        for j, sm in enumerate(otlp.json_list(rm, "scopeMetrics", f"resourceMetrics[{i}]")):
            for metric in otlp.json_list(sm, "metrics", f"resourceMetrics[{i}].scopeMetrics[{j}]"):
                for data in metric.values() if isinstance(metric, dict) else ():
                    points = data.get("dataPoints") if isinstance(data, dict) else None
                    for point in points if isinstance(points, list) else ():
                        if isinstance(point, dict):
                            point.pop("exemplars", None)
    return document
