"""Reads of `llm_calls` and `spans` that other rooms and the API call: calls by filter, one
trace, response lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from driftline.store import Store
from driftline.store.sql import Where

_TIMES = (
    "toUnixTimestamp64Nano(start_time) AS start_time_unix_nano, "
    "concat(replaceOne(toString(start_time), ' ', 'T'), 'Z') AS start_iso, "
    "concat(replaceOne(toString(end_time), ' ', 'T'), 'Z') AS end_iso"
)
_COMMON = (
    "trace_id, span_id, parent_span_id, duration_ms, service, service_version, environment, "
    "span_name, status_code, status_message, attributes, resource_attributes"
)
_CALL_COLUMNS = (
    f"{_COMMON}, {_TIMES}, operation, provider, request_model, response_model, input_messages, "
    "output_messages, input_text, output_text, input_tokens, output_tokens, total_tokens, "
    "cost_usd, finish_reasons, error_type, conversation_id, user_id, agent_name"
)
_SPAN_COLUMNS = f"{_COMMON}, {_TIMES}, kind, scope_name, events, links"

Position = tuple[int, str, str]
"""Where a page of calls ends: (start time in ns, trace id, span id)."""


@dataclass(frozen=True)
class CallFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    model: str | None = None  # the request or the response model
    service: str | None = None
    operation: str | None = None
    status: Literal["ok", "error", "unset"] | None = None
    text: str | None = None  # in the input or the output, case-insensitive


def list_calls(
    store: Store, project: str, f: CallFilter, limit: int, after: Position | None = None
) -> list[dict[str, Any]]:
    """Calls newest first, from just past `after`; each row has `start_time_unix_nano`."""
    where = Where("project_id = {project:String}", project=project)
    where.between("start_time", f.since_ns, f.until_ns)
    if f.model:
        where.add(
            "request_model = {model:String} OR response_model = {model:String}", model=f.model
        )
    where.equals("service", f.service).equals("operation", f.operation)
    where.equals("status_code", f.status)
    if f.text:
        where.add(
            "positionCaseInsensitiveUTF8(input_text, {q:String}) > 0 "
            "OR positionCaseInsensitiveUTF8(output_text, {q:String}) > 0",
            q=f.text,
        )
    if after is not None:
        where.add(
            "(start_time, trace_id, span_id) < (fromUnixTimestamp64Nano({c_ns:Int64}, 'UTC'), "
            "{c_trace:String}, {c_span:String})",
            c_ns=after[0], c_trace=after[1], c_span=after[2],
        )  # fmt: skip
    rows = store.query(
        f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL WHERE {where} "
        "ORDER BY start_time DESC, trace_id DESC, span_id DESC LIMIT {limit:UInt32}",
        {**where.params, "limit": limit},
    )
    return [_row(r, "llm_call") for r in rows]


def trace(store: Store, project: str, trace_id: str) -> list[dict[str, Any]]:
    """Every span of a trace, LLM calls included, by start time; empty when none."""
    where = Where("project_id = {project:String}", project=project).equals("trace_id", trace_id)
    calls = store.query(f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL WHERE {where}", where.params)
    spans = store.query(f"SELECT {_SPAN_COLUMNS} FROM spans FINAL WHERE {where}", where.params)
    items = [_row(r, "llm_call") for r in calls] + [_row(r, "span") for r in spans]
    items.sort(key=lambda r: r["start_time_unix_nano"])
    return items


def response_lengths(store: Store, project: str, span_ids: list[str]) -> dict[tuple[str, str], int]:
    """(trace id, span id) → characters in the call's response, for the calls found."""
    return {
        (row["trace_id"], row["span_id"]): row["length"]
        for row in store.query(
            "SELECT trace_id, span_id, lengthUTF8(output_text) AS length FROM llm_calls "
            "WHERE project_id = {p:String} AND span_id IN {spans:Array(String)}",
            {"p": project, "spans": sorted(span_ids)},
        )
    }


def _row(row: dict[str, Any], kind: str) -> dict[str, Any]:
    row["type"] = kind
    row["start_time"], row["end_time"] = row.pop("start_iso"), row.pop("end_iso")
    row["attributes"] = dict(row["attributes"])
    row["resource_attributes"] = dict(row["resource_attributes"])
    for key in ("input_messages", "output_messages", "events", "links"):
        if key in row:
            row[key] = orjson.loads(row[key]) if row[key] else []
    return row
