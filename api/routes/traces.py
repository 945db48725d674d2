"""Traces API: every span of one trace, LLM calls included."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from driftline.api.auth import ReadKey
from driftline.api.routes.common import HEX32
from driftline.api.runtime import ApiError, runtime
from driftline.ingest.tables import trace

router = APIRouter(prefix="/api", tags=["read"])


@router.get("/traces/{trace_id}", summary="Every span of one trace, LLM calls included")
def get_trace(request: Request, principal: ReadKey, trace_id: str) -> dict[str, Any]:
    trace_id = trace_id.lower()
    if not HEX32.match(trace_id):
        raise ApiError(400, f"trace id {trace_id!r} must be 32 hex characters")
    items = trace(runtime(request).store, principal.project or "", trace_id)
    if not items:
        raise ApiError(404, f"no trace {trace_id} in project {principal.project!r}")
    return {"trace_id": trace_id, "spans": items}
