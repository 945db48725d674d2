"""Feedback API: judgements on traces and spans, from apps (SDK `feedback`) and people."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.api.auth import IngestKey, ReadKey
from driftline.api.runtime import runtime
from driftline.review.feedback import (
    FeedbackFilter,
    Source,
    check_targets,
    parse,
    read_feedback,
    store_feedback,
)
from driftline.store.times import parse_time

router = APIRouter(prefix="/api", tags=["feedback"])


@router.post("/feedback", summary="Store feedback on traces or spans (one object or a list)")
async def post_feedback(request: Request, principal: IngestKey) -> dict[str, Any]:
    body = await request.body()
    records = parse(body)
    from_sdk = request.headers.get("user-agent", "").startswith("driftline-sdk")
    source: Source = "sdk" if from_sdk else "api"
    assert principal.project is not None
    store = runtime(request).store
    check_targets(store, principal.project, records, body.lstrip()[:1] == b"[")
    ids, duplicates = store_feedback(store, principal.project, records, source)
    return {"accepted": len(records), "duplicates": duplicates, "ids": ids}


@router.get("/feedback", summary="Feedback, newest first")
def list_feedback(
    request: Request,
    principal: ReadKey,
    trace_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    name: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    f = FeedbackFilter(trace_id, name, parse_time(since, "since"), parse_time(until, "until"))
    return {"items": read_feedback(runtime(request).store, principal.project or "", f, limit)}
