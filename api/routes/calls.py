"""Calls API: LLM calls with filters and cursor pagination."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request

from driftline.api.auth import ReadKey, charge_heavy
from driftline.api.routes.common import HEX32
from driftline.api.runtime import ApiError, runtime
from driftline.ingest import tables as ingest_tables
from driftline.store.times import MAX_NS, parse_time

router = APIRouter(prefix="/api", tags=["read"])
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = orjson.dumps([row["start_time_unix_nano"], row["trace_id"], row["span_id"]])
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> ingest_tables.Position:
    try:
        ns, trace_id, span_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not (
            type(ns) is int
            and 0 <= ns <= MAX_NS
            and HEX32.match(trace_id)
            and _HEX16.match(span_id)
        ):
            raise ValueError
    except Exception:
        raise ApiError(400, "cursor is not one this API returned") from None
    return ns, trace_id, span_id


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
    if q:  # a scan of the texts, not a range read
        charge_heavy(request, principal)
    found = ingest_tables.list_calls(
        runtime(request).store,
        principal.project or "",
        ingest_tables.CallFilter(
            parse_time(since, "since"), parse_time(until, "until"), model, service, operation,
            status, q,
        ),
        limit + 1,
        _decode_cursor(cursor) if cursor else None,
    )  # fmt: skip
    next_cursor = _encode_cursor(found[limit - 1]) if len(found) > limit else None
    return {"items": found[:limit], "next_cursor": next_cursor}
