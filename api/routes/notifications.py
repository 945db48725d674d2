"""Notifications API: the outbox with each message's delivery attempts, and retrying one."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from driftline.alerts.tables import notifications
from driftline.alerts.timestamps import rfc3339
from driftline.api.auth import AdminKey, ReadKey
from driftline.api.runtime import ApiError, runtime

router = APIRouter(prefix="/api", tags=["alerts"])


@router.get("/notifications", summary="Notifications in the outbox with their attempts")
def get_notifications(
    request: Request,
    principal: ReadKey,
    status: Literal["pending", "delivered", "dead", "superseded"] | None = None,
    receiver: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = notifications(runtime(request).store, principal.project or "", status, receiver, limit)
    return {
        "items": [
            {
                "id": r["id"],
                "receiver": r["receiver"],
                "kind": r["kind"],
                "groupKey": r["group_key"],
                "status": r["status"],
                "attempts": r["attempts"],
                "lastError": r["last_error"],
                "createdAt": rfc3339(r["created_ms"] / 1000),
                "nextAttemptAt": rfc3339(r["next_ms"] / 1000) if r["status"] == "pending" else None,
                "updatedAt": rfc3339(r["updated_ms"] / 1000),
                "body": json.loads(r["body"]),
                "deliveryAttempts": [
                    {
                        "attempt": a["attempt"],
                        "at": rfc3339(a["at_ms"] / 1000),
                        "statusCode": a["status_code"] or None,
                        "error": a["error"],
                        "durationMs": a["duration_ms"],
                    }
                    for a in r["tried"]
                ],
            }
            for r in rows
        ]
    }


@router.post("/notifications/{notification_id}/retry", summary="Send a dead-lettered message again")
def retry_notification(
    request: Request, principal: AdminKey, notification_id: str
) -> dict[str, Any]:
    loop = runtime(request).alerts
    if loop is None:
        raise ApiError(409, "the alert engine does not run in this process (no rules file)")
    if not loop.engine.outbox.retry(notification_id, principal.project):
        raise ApiError(404, f"no dead notification {notification_id!r} in this project")
    return {"id": notification_id, "status": "pending"}
