"""OTLP/HTTP ingest: `POST /v1/traces`, acknowledged once durable in the log (ack = "log") or
confirmed by the ClickHouse server (ack = "store"); `/v1/metrics` and `/v1/logs`, acknowledged
once stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from driftline.api.auth import IngestKey
from driftline.api.budget import BodiesBusy, BodyOverBudget, hold_of
from driftline.api.runtime import ApiError, runtime
from driftline.ingest import envelope, otlp, otlp_logs, otlp_metrics
from driftline.ingest.tables import insert_signal
from driftline.ingest.wal import WalClosed, WalFull
from driftline.store import StoreError

router = APIRouter(tags=["ingest"])
_RETRY_WHEN_FULL = "5"
OTLP_PATHS = frozenset({"/v1/traces", "/v1/metrics", "/v1/logs"})


async def read_body(request: Request, limit: int) -> bytes:
    """The body, taken from the server's byte budget before it is read (when its length is
    declared) or as it arrives: 503 with Retry-After when other bodies fill the budget."""
    hold = hold_of(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise ApiError(413, f"body of {declared} bytes passes the limit of {limit} bytes")
        hold.take(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body passes the limit of {limit} bytes")
        hold.take(size - hold.held)  # beyond what was declared (or chunked)
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
        # inflating and parsing up to max_decompressed_bytes: off the event loop, each MiB
        # inflated taken from the byte budget
        decoded = await run_in_threadpool(
            otlp.decode,
            body,
            media,
            request.headers.get("content-encoding"),
            rt.settings.max_decompressed_bytes,
            hold_of(request).take,
        )
    except (BodiesBusy, BodyOverBudget) as exc:
        raise ApiError(exc.status_code, exc.detail, dict(exc.headers or {})) from None
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
            future = rt.writer.submit(envelope.pack_parts(principal.project, decoded.wire))
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
        except StoreError as exc:  # ack = "store": the server did not confirm the insert
            raise ApiError(503, f"{exc}; retry later", {"Retry-After": "5"}) from None
        rt.metrics.spans_accepted.inc(decoded.accepted)
    rt.metrics.ack_seconds.observe(time.perf_counter() - started)
    rt.metrics.requests.labels("200").inc()
    return Response(otlp.response(decoded, media), media_type=media)


@router.post(
    "/v1/metrics",
    summary="OTLP/HTTP metric export (protobuf or JSON, optionally gzip)",
    response_class=Response,
)
async def export_metrics(request: Request, principal: IngestKey) -> Response:
    media, rejected, message = await _store_signal(
        request, principal.project, "otel_metrics", otlp_metrics.decode, otlp_metrics.rows
    )
    return Response(otlp_metrics.response(rejected, message, media), media_type=media)


@router.post(
    "/v1/logs",
    summary="OTLP/HTTP log export (protobuf or JSON, optionally gzip)",
    response_class=Response,
)
async def export_logs(request: Request, principal: IngestKey) -> Response:
    media, rejected, message = await _store_signal(
        request, principal.project, "otel_logs", otlp_logs.decode, otlp_logs.rows
    )
    return Response(otlp_logs.response(rejected, message, media), media_type=media)


async def _store_signal(
    request: Request,
    project: str | None,
    table: str,
    decode: Callable[[bytes, str, str | None, int], Any],
    rows_of: Callable[[Any], tuple[list[dict[str, Any]], int, str]],
) -> tuple[str, int, str]:
    """Read, decode and store a metrics or logs export before answering: the store is what
    makes it durable (these are small and few beside traces). (media, rejected, message)."""
    rt = runtime(request)
    try:
        media = otlp.media_type(request.headers.get("content-type"))
        body = await read_body(request, rt.settings.max_body_bytes)
        decoded = await run_in_threadpool(
            decode, body, media, request.headers.get("content-encoding"),
            rt.settings.max_decompressed_bytes,
        )  # fmt: skip
    except (BodiesBusy, BodyOverBudget) as exc:
        raise ApiError(exc.status_code, exc.detail, dict(exc.headers or {})) from None
    except otlp.UnsupportedMedia as exc:
        raise ApiError(415, str(exc)) from None
    except otlp.TooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except otlp.BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    rows, rejected, message = rows_of(decoded)
    if rows:
        assert project is not None
        try:
            await run_in_threadpool(insert_signal, rt.store, table, project, rows)
        except StoreError as exc:
            raise ApiError(503, f"the store is unavailable: {exc}", {"Retry-After": "5"}) from None
    return media, rejected, message
