"""Alerts API: alerts and their states, silences, notifications with their delivery attempts,
and retraining jobs. Every route is scoped to the key's project."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.alerts.durations import parse_duration
from driftline.alerts.labels import Matcher
from driftline.alerts.silences import SilenceError, Silences, parse_matchers
from driftline.alerts.state import Alert, AlertLog
from driftline.alerts.timestamps import parse_rfc3339, rfc3339
from driftline.api.auth import AdminKey, ReadKey
from driftline.api.runtime import ApiError, runtime

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
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> dict[str, Any]:
    where = "project_id = {p:String} AND state IN {states:Array(String)}"
    params: dict[str, Any] = {"p": principal.project, "states": list(_STATES[state])}
    if rule:
        where += " AND rule = {rule:String}"
        params["rule"] = rule
    if fingerprint:
        where += " AND fingerprint = {fp:String}"
        params["fp"] = fingerprint
    store = runtime(request).store
    now = time.time()
    silences = [s for s in Silences(store).list(principal.project) if s.status(now) == "active"]
    alerts = AlertLog(store).query(where, params, limit)
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


class ApiMatcher(BaseModel):
    """Alertmanager's matcher object."""

    model_config = ConfigDict(extra="forbid")
    name: str
    value: str
    isRegex: bool = False
    isEqual: bool = True

    def text(self) -> str:
        op = ("=" if self.isEqual else "!") + ("~" if self.isRegex else "")
        op = "!=" if op == "!" else op
        return str(Matcher(self.name, op, self.value))  # type: ignore[arg-type]


class NewSilence(BaseModel):
    """A silence: matchers as `name="value"` strings or Alertmanager objects; an end or a
    duration (`2h`)."""

    model_config = ConfigDict(extra="forbid")
    matchers: list[str | ApiMatcher] = Field(min_length=1)
    startsAt: str | None = None
    endsAt: str | None = None
    duration: str | None = None
    createdBy: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)


@router.post("/silences", status_code=201, summary="Silence alerts matching every matcher")
def post_silence(request: Request, principal: AdminKey, body: NewSilence) -> dict[str, Any]:
    assert principal.project is not None
    now = time.time()
    try:
        starts = parse_rfc3339(body.startsAt) if body.startsAt else now
        if (body.endsAt is None) == (body.duration is None):
            raise SilenceError("give exactly one of endsAt or duration")
        ends = (
            parse_rfc3339(body.endsAt)
            if body.endsAt
            else starts + parse_duration(body.duration or "")
        )
        matchers = parse_matchers([m if isinstance(m, str) else m.text() for m in body.matchers])
        silence = Silences(runtime(request).store).create(
            principal.project, matchers, starts, ends, body.createdBy, body.comment, now
        )
    except (SilenceError, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    return silence.to_api(now)


@router.get("/silences", summary="Silences, newest first")
def get_silences(request: Request, principal: ReadKey) -> dict[str, Any]:
    now = time.time()
    return {
        "items": [s.to_api(now) for s in Silences(runtime(request).store).list(principal.project)]
    }


@router.delete("/silences/{silence_id}", summary="Expire a silence now")
def delete_silence(request: Request, principal: AdminKey, silence_id: str) -> dict[str, Any]:
    assert principal.project is not None
    now = time.time()
    silence = Silences(runtime(request).store).expire(principal.project, silence_id, now)
    if silence is None:
        raise ApiError(404, f"no silence {silence_id!r} in project {principal.project!r}")
    return silence.to_api(now)


@router.get("/notifications", summary="Notifications in the outbox with their attempts")
def get_notifications(
    request: Request,
    principal: ReadKey,
    status: Literal["pending", "delivered", "dead", "superseded"] | None = None,
    receiver: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = "project_id = {p:String}"
    params: dict[str, Any] = {"p": principal.project, "limit": limit}
    if status:
        where += " AND status = {status:String}"
        params["status"] = status
    if receiver:
        where += " AND receiver = {receiver:String}"
        params["receiver"] = receiver
    store = runtime(request).store
    rows = store.query(
        "SELECT id, receiver, kind, group_key, status, attempts, last_error, body, "
        "toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(next_attempt_at) AS next_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms "
        f"FROM notifications FINAL WHERE {where} ORDER BY created_at DESC LIMIT {{limit:UInt32}}",
        params,
    )
    attempts: dict[str, list[dict[str, Any]]] = {}
    if rows:
        for a in store.query(
            "SELECT notification_id, attempt, toUnixTimestamp64Milli(at) AS at_ms, status_code, "
            "error, duration_ms FROM notification_attempts WHERE project_id = {p:String} "
            "AND notification_id IN {ids:Array(String)} ORDER BY attempt",
            {"p": principal.project, "ids": [r["id"] for r in rows]},
        ):
            attempts.setdefault(a["notification_id"], []).append(
                {
                    "attempt": a["attempt"],
                    "at": rfc3339(a["at_ms"] / 1000),
                    "statusCode": a["status_code"] or None,
                    "error": a["error"],
                    "durationMs": a["duration_ms"],
                }
            )
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
                "deliveryAttempts": attempts.get(r["id"], []),
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


@router.get("/retrain-jobs", summary="Retraining jobs, newest first")
def get_retrain_jobs(
    request: Request, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    rows = runtime(request).store.query(
        "SELECT id, rule, fingerprint, reason, evidence, snapshot, launcher, status, exit_code, "
        "output, toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms FROM retrain_jobs FINAL "
        "WHERE project_id = {p:String} ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": principal.project, "limit": limit},
    )
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
