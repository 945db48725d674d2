"""OTLP/HTTP log exports (`POST /v1/logs`): each log record as a row of `otel_logs`. GenAI
instrumentations that record prompts and answers as events (`gen_ai.user.message`, ...) send
them this way; the records keep their trace and span ids, so they join a trace's calls."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from driftline.ingest import otlp

_MAX_TIME = 2**63 - 1  # ClickHouse DateTime64(9) ends in 2262


def decode(body: bytes, media: str, encoding: str | None, limit: int) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    otlp.parse_into(request, otlp.decompress(body, encoding, limit), media, "log", _ids_to_base64)
    return request


def rows(request: ExportLogsServiceRequest) -> tuple[list[dict[str, Any]], int, str]:
    """The request's log records as rows, and how many were rejected (and why, the first)."""
    out: list[dict[str, Any]] = []
    rejected, first = 0, ""
    for rl in request.resource_logs:
        resource = otlp.text_map(rl.resource.attributes)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                # OTLP: when the time is unknown the observed time stands in for it
                moment = record.time_unix_nano or record.observed_time_unix_nano
                if not 0 < moment <= _MAX_TIME:
                    rejected += 1
                    first = first or "a log record has no valid time"
                    continue
                body = otlp.plain(record.body)
                row = {
                    "service": resource.get("service.name", ""),
                    "time": moment,
                    "severity_number": record.severity_number,
                    "severity_text": record.severity_text,
                    "event_name": record.event_name,
                    "body": body if isinstance(body, str) else orjson.dumps(body).decode(),
                    "attributes": otlp.text_map(record.attributes),
                    "resource": resource,
                    "scope": sl.scope.name,
                    "trace_id": record.trace_id.hex(),
                    "span_id": record.span_id.hex(),
                }
                row["record_id"] = hashlib.blake2b(
                    orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=12
                ).hexdigest()  # the same record sent twice is one row
                out.append(row)
    return out, rejected, first


def response(rejected: int, message: str, media: str) -> bytes:
    reply = ExportLogsServiceResponse()
    if rejected:
        reply.partial_success.rejected_log_records = rejected
        reply.partial_success.error_message = message
    return otlp.encode(reply, media)


def _ids_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    for i, rl in enumerate(otlp.json_list(document, "resourceLogs", "")):
        for j, sl in enumerate(otlp.json_list(rl, "scopeLogs", f"resourceLogs[{i}]")):
            where = f"resourceLogs[{i}].scopeLogs[{j}]"
            for k, record in enumerate(otlp.json_list(sl, "logRecords", where)):
                if isinstance(record, dict):
                    for key in ("traceId", "spanId"):
                        otlp.hex_to_base64(record, key, f"{where}.logRecords[{k}]")
    return document
