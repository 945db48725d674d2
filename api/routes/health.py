"""Health API: liveness (`/healthz`) and readiness (`/readyz`) for probes and load balancers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from driftline.api.runtime import runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Store reachable and log backlog under budget")
def readyz(request: Request) -> Response:
    rt = runtime(request)
    problems = []
    if not rt.store.ping() or not rt.writer.store_healthy:
        problems.append("store unreachable")
    backlog = rt.writer.backlog_bytes()
    if backlog >= rt.settings.wal_budget_bytes:
        problems.append(f"log backlog {backlog} bytes at its budget")
    body = {
        "status": "not ready" if problems else "ready",
        "problems": problems,
        "wal_backlog_bytes": backlog,
    }
    return JSONResponse(body, 503 if problems else 200)
