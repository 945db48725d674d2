"""Review-queue API: calls to review, flagged by detectors or sampled for audit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime
from driftline.detectors.tables import queue_items

router = APIRouter(prefix="/api", tags=["drift"])


@router.get("/review-queue", summary="Calls to review, highest priority first")
def get_review_queue(
    request: Request,
    principal: ReadKey,
    reason: str | None = None,
    source: Annotated[str | None, Query(pattern="^(flag|audit)$")] = None,
    reference: Annotated[str | None, Query(description="calls of this reference's windows")] = None,
    window_key: Annotated[str | None, Query(description="calls of one tested window")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = queue_items(
        runtime(request).store, principal.project or "", reason, source, reference, window_key,
        limit,
    )  # fmt: skip
    return {"items": rows}
