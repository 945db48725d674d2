"""Drift API: drift statistics per window over time, and each test's findings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime
from driftline.detectors.tables import drift_windows, findings
from driftline.store.times import parse_time

router = APIRouter(prefix="/api", tags=["drift"])


@router.get("/drift", summary="Drift statistics per window over time, oldest first")
def get_drift(
    request: Request,
    principal: ReadKey,
    reference: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    windows = drift_windows(
        runtime(request).store, principal.project or "", reference,
        parse_time(since, "since"), parse_time(until, "until"), limit,
    )  # fmt: skip
    return {"items": windows}


@router.get("/findings", summary="Each test's result per window, newest first")
def get_findings(
    request: Request,
    principal: ReadKey,
    reference: str | None = None,
    detector: str | None = None,
    rejected: bool | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    rows = findings(
        runtime(request).store, principal.project or "", reference, detector, rejected,
        parse_time(since, "since"), parse_time(until, "until"), limit,
    )  # fmt: skip
    return {"items": rows}
