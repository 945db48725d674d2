"""OTLP/HTTP trace ingest: `POST /v1/traces`, acknowledged once durable in the log."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from driftline.api.auth import IngestKey
from driftline.api.runtime import ApiError, runtime
from driftline.ingest import envelope, otlp
from driftline.ingest.wal import WalClosed, WalFull

router = APIRouter(tags=["ingest"])
_RETRY_WHEN_FULL = "5"


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise ApiError(413, f"body of {declared} bytes passes the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body passes the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON, optionally gzip)",
    response_class=Response,
)
async def export_traces(request: Request, principal: IngestKey) -> Response:
    rt = runtime(request)
    started = time.perf_counter()
    try:
        media = otlp.media_type(request.headers.get("content-type"))
        body = await read_body(request, rt.settings.max_body_bytes)
        # inflating and parsing up to max_decompressed_bytes: off the event loop
        decoded = await run_in_threadpool(
            otlp.decode,
            body,
            media,
            request.headers.get("content-encoding"),
            rt.settings.max_decompressed_bytes,
        )
    except otlp.UnsupportedMedia as exc:
        raise ApiError(415, str(exc)) from None
    except otlp.TooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except otlp.BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    for reason, count in decoded.rejected.items():
        rt.metrics.spans_rejected.labels(reason).inc(count)
    if decoded.accepted:
        assert principal.project is not None
        try:
            future = rt.wal.submit(envelope.pack(principal.project, decoded.wire))
        except WalFull as exc:
            rt.metrics.spans_rejected.labels("backlog_full").inc(decoded.accepted)
            raise ApiError(
                503, f"{exc}; the store is behind, retry later", {"Retry-After": _RETRY_WHEN_FULL}
            ) from None
        except WalClosed:
            raise ApiError(503, "collector is shutting down", {"Retry-After": "1"}) from None
        try:
            await asyncio.wrap_future(future)
        except OSError as exc:  # disk full or failing: nothing was acknowledged
            raise ApiError(503, f"could not write the log: {exc}", {"Retry-After": "5"}) from None
        rt.metrics.spans_accepted.inc(decoded.accepted)
    rt.metrics.ack_seconds.observe(time.perf_counter() - started)
    rt.metrics.requests.labels("200").inc()
    return Response(otlp.response(decoded, media), media_type=media)
