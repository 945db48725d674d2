"""Retrain-jobs API: the retraining jobs that alert rules launched, with their outcome."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from driftline.alerts.tables import retrain_jobs
from driftline.alerts.timestamps import rfc3339
from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime

router = APIRouter(prefix="/api", tags=["alerts"])


@router.get("/retrain-jobs", summary="Retraining jobs, newest first")
def get_retrain_jobs(
    request: Request, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    rows = retrain_jobs(runtime(request).store, principal.project or "", limit)
    return {
        "items": [
            {
                "id": r["id"],
                "rule": r["rule"],
                "fingerprint": r["fingerprint"],
                "reason": r["reason"],
                "evidence": json.loads(r["evidence"]),
                "snapshot": json.loads(r["snapshot"]),
                "launcher": r["launcher"],
                "status": r["status"],
                "exitCode": r["exit_code"],
                "output": r["output"],
                "createdAt": rfc3339(r["created_ms"] / 1000),
                "updatedAt": rfc3339(r["updated_ms"] / 1000),
            }
            for r in rows
        ]
    }
