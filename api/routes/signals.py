"""What arrived through `/v1/metrics` and `/v1/logs`: each metric and log event, its count."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime
from driftline.ingest.tables import signal_summary

router = APIRouter(prefix="/api", tags=["read"])


@router.get("/otel-signals", summary="OTLP metrics and log events received, per name")
def list_signals(
    request: Request,
    principal: ReadKey,
    hours: Annotated[float, Query(gt=0, le=24 * 90, description="how far back")] = 24,
) -> dict[str, Any]:
    since = time.time_ns() - round(hours * 3600 * 1e9)
    return {"items": signal_summary(runtime(request).store, principal.project or "", since)}
