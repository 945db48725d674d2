"""Read API: calls with filters and cursor pagination, whole traces."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request

from driftline.collector.auth import require
from driftline.collector.keys import Principal, Role
from driftline.collector.runtime import ApiError, runtime

router = APIRouter(prefix="/api", tags=["read"])
ReadKey = Annotated[Principal, Depends(require(Role.READ))]
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")

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


_RFC3339_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NS = 2**63 - 1


def parse_time(value: str | None, name: str) -> int | None:
    """RFC 3339 or Unix seconds, as Unix nanoseconds (exactly: no float rounding)."""
    if value is None or value == "":
        return None
    try:
        seconds = Decimal(value.strip())
    except InvalidOperation:
        ns = _parse_rfc3339(value, name)
    else:
        if not seconds.is_finite():
            raise ApiError(400, f"{name}={value!r} is not RFC 3339 time or Unix seconds")
        ns = int(seconds * 1_000_000_000) if seconds.adjusted() < 11 else -1
    if not 0 <= ns <= _MAX_NS:
        raise ApiError(400, f"{name}={value!r} is out of range (1970 to 2262)")
    return ns


def _parse_rfc3339(value: str, name: str) -> int:
    whole, nanos = value, 0
    fraction = _RFC3339_FRACTION.search(value)
    if fraction:  # datetime keeps microseconds only; keep all nine digits
        nanos = int(fraction.group(2)[:9].ljust(9, "0"))
        whole = value[: fraction.start(2) - 1] + value[fraction.end(2) :]
    try:
        moment = datetime.fromisoformat(whole)
    except ValueError:
        raise ApiError(400, f"{name}={value!r} is not RFC 3339 time or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(seconds=1) * 1_000_000_000 + nanos


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = orjson.dumps([row["start_time_unix_nano"], row["trace_id"], row["span_id"]])
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[int, str, str]:
    try:
        ns, trace_id, span_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not (
            type(ns) is int
            and 0 <= ns <= _MAX_NS
            and _HEX32.match(trace_id)
            and _HEX16.match(span_id)
        ):
            raise ValueError
    except Exception:
        raise ApiError(400, "cursor is not one this API returned") from None
    return ns, trace_id, span_id


def _row(row: dict[str, Any], kind: str) -> dict[str, Any]:
    row["type"] = kind
    row["start_time"], row["end_time"] = row.pop("start_iso"), row.pop("end_iso")
    row["attributes"] = dict(row["attributes"])
    row["resource_attributes"] = dict(row["resource_attributes"])
    for key in ("input_messages", "output_messages", "events", "links"):
        if key in row:
            row[key] = orjson.loads(row[key]) if row[key] else []
    return row


@router.get("/calls", summary="LLM calls, newest first")
def list_calls(
    request: Request,
    principal: ReadKey,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    model: Annotated[str | None, Query(description="request or response model")] = None,
    service: str | None = None,
    operation: str | None = None,
    status: Literal["ok", "error", "unset"] | None = None,
    q: Annotated[
        str | None, Query(description="text in the input or output", max_length=500)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    project: Annotated[str | None, Query(description="must match the key's project")] = None,
) -> dict[str, Any]:
    where = ["project_id = {project:String}"]
    params: dict[str, Any] = {"project": principal.project, "limit": limit + 1}
    lo, hi = parse_time(since, "since"), parse_time(until, "until")
    if lo is not None:
        where.append("start_time >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC')")
        params["lo"] = lo
    if hi is not None:
        where.append("start_time < fromUnixTimestamp64Nano({hi:Int64}, 'UTC')")
        params["hi"] = hi
    if model:
        where.append("(request_model = {model:String} OR response_model = {model:String})")
        params["model"] = model
    for column, value in (("service", service), ("operation", operation), ("status_code", status)):
        if value:
            where.append(f"{column} = {{{column}:String}}")
            params[column] = value
    if q:
        where.append(
            "(positionCaseInsensitiveUTF8(input_text, {q:String}) > 0 "
            "OR positionCaseInsensitiveUTF8(output_text, {q:String}) > 0)"
        )
        params["q"] = q
    if cursor:
        params["c_ns"], params["c_trace"], params["c_span"] = _decode_cursor(cursor)
        where.append(
            "(start_time, trace_id, span_id) < (fromUnixTimestamp64Nano({c_ns:Int64}, 'UTC'), "
            "{c_trace:String}, {c_span:String})"
        )
    rows = runtime(request).store.query(
        f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL WHERE {' AND '.join(where)} "
        "ORDER BY start_time DESC, trace_id DESC, span_id DESC LIMIT {limit:UInt32}",
        params,
    )
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return {"items": [_row(r, "llm_call") for r in rows[:limit]], "next_cursor": next_cursor}


@router.get("/traces/{trace_id}", summary="Every span of one trace, LLM calls included")
def get_trace(request: Request, principal: ReadKey, trace_id: str) -> dict[str, Any]:
    trace_id = trace_id.lower()
    if not _HEX32.match(trace_id):
        raise ApiError(400, f"trace id {trace_id!r} must be 32 hex characters")
    store = runtime(request).store
    params = {"project": principal.project, "trace": trace_id}
    where = "WHERE project_id = {project:String} AND trace_id = {trace:String}"
    calls = store.query(f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL {where}", params)
    spans = store.query(f"SELECT {_SPAN_COLUMNS} FROM spans FINAL {where}", params)
    if not calls and not spans:
        raise ApiError(404, f"no trace {trace_id} in project {principal.project!r}")
    items = [_row(r, "llm_call") for r in calls] + [_row(r, "span") for r in spans]
    items.sort(key=lambda r: r["start_time_unix_nano"])
    return {"trace_id": trace_id, "spans": items}
