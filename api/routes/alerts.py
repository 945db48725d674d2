"""Alerts API: alerts and their states, with the silences that mute them."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from driftline.alerts.silences import Silences
from driftline.alerts.state import Alert, AlertLog
from driftline.alerts.timestamps import rfc3339
from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime

router = APIRouter(prefix="/api", tags=["alerts"])
_STATES = {
    "active": ("pending", "firing"),
    "pending": ("pending",),
    "firing": ("firing",),
    "resolved": ("resolved",),
    "all": ("pending", "firing", "resolved"),
}


@router.get("/alerts", summary="Alerts, newest first (default: pending and firing)")
def get_alerts(
    request: Request,
    principal: ReadKey,
    state: Literal["active", "pending", "firing", "resolved", "all"] = "active",
    rule: str | None = None,
    fingerprint: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    store = runtime(request).store
    now = time.time()
    silences = [s for s in Silences(store).list(principal.project) if s.status(now) == "active"]
    alerts = AlertLog(store).query(principal.project, _STATES[state], rule, fingerprint, limit)
    return {
        "items": [_alert(a, [s.id for s in silences if s.mutes(a.labels, now)]) for a in alerts]
    }


def _alert(alert: Alert, silenced_by: list[str]) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "state": alert.state,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "value": alert.value,
        "evidence": alert.evidence,
        "activeAt": rfc3339(alert.active_at),
        "firedAt": rfc3339(alert.fired_at) if alert.fired_at else None,
        "resolvedAt": rfc3339(alert.resolved_at) if alert.resolved_at else None,
        "silencedBy": silenced_by,
    }
