"""Metrics API: the collector's Prometheus exposition at `/metrics`, behind a bearer token
when `metrics_token_file` is set (Prometheus sends it with `authorization.credentials_file`)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from driftline.api.auth import CHALLENGE, presented_key
from driftline.api.runtime import ApiError, runtime

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    rt = runtime(request)
    if rt.metrics_token is not None:
        sent = presented_key(request.headers) or ""
        if not (sent.isascii() and hmac.compare_digest(sent, rt.metrics_token)):
            raise ApiError(401, "/metrics needs the metrics bearer token", CHALLENGE)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
