"""Feedback API: judgements on traces and spans, from apps (SDK `feedback`) and people."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.api.auth import FeedbackKey, ReadKey
from driftline.api.runtime import runtime
from driftline.review.feedback import (
    FeedbackFilter,
    FeedbackIn,
    Source,
    check_targets,
    parse,
    read_feedback,
    store_feedback,
)
from driftline.review.web import name_of
from driftline.store.errors import InputError
from driftline.store.keys import Principal, Role
from driftline.store.times import parse_time

router = APIRouter(prefix="/api", tags=["feedback"])


@router.post(
    "/feedback",
    summary="Store feedback on traces or spans (one object or a list)",
    description="With an ingest key the feedback is the app's (`source` sdk or api); with a "
    "review key it is a reviewer's judgement (`source` review, `user` the key's reviewer), "
    "which is what training data reads by default.",
)
async def post_feedback(request: Request, principal: FeedbackKey) -> dict[str, Any]:
    body = await request.body()
    records = parse(body)
    source = _source(request, principal)
    if source == "review":
        records = _as_reviewer(records, name_of(principal), body.lstrip()[:1] == b"[")
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
    source: Annotated[Source | None, Query(description="review, sdk, api or judge")] = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    f = FeedbackFilter(
        trace_id, name, source, parse_time(since, "since"), parse_time(until, "until")
    )
    return {"items": read_feedback(runtime(request).store, principal.project or "", f, limit)}


def _source(request: Request, principal: Principal) -> Source:
    """A review key speaks for a reviewer; any other key for the app (its SDK or not)."""
    if principal.role is Role.REVIEW:
        return "review"
    return "sdk" if request.headers.get("user-agent", "").startswith("driftline-sdk") else "api"


def _as_reviewer(records: list[FeedbackIn], reviewer: str, batched: bool) -> list[FeedbackIn]:
    """The records under the key's reviewer: a judgement cannot be sent in another's name."""
    for i, record in enumerate(records):
        if record.user is not None and record.user != reviewer:
            where = f"[{i}].user" if batched else "user"
            raise InputError(
                f"{where}: a review key's feedback is stored under its reviewer {reviewer!r}, "
                f"not {record.user!r}; leave user out"
            )
    return [record.model_copy(update={"user": reviewer}) for record in records]
