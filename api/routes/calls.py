"""Calls API: LLM calls with filters and cursor pagination."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from driftline.api.auth import ReadKey, charge_heavy
from driftline.api.runtime import runtime
from driftline.ingest import tables as ingest_tables
from driftline.ingest.cursor import next_page, position
from driftline.store.times import parse_time

router = APIRouter(prefix="/api", tags=["read"])


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
        position(cursor) if cursor else None,
    )  # fmt: skip
    items, next_cursor = next_page(found, limit)
    return {"items": items, "next_cursor": next_cursor}
