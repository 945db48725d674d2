"""Metrics API: the collector's Prometheus exposition at `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from driftline.api.runtime import runtime

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(runtime(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
