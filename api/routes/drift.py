"""Drift API: references, drift statistics over time, findings, and the review queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import AdminKey, ReadKey
from driftline.api.routes.calls import parse_time
from driftline.api.runtime import ApiError, runtime
from driftline.detectors.references import (
    MIN_CALLS,
    Reference,
    ReferenceError,
    create_reference,
    list_references,
)
from driftline.store.keys import Principal

router = APIRouter(prefix="/api", tags=["drift"])
_ISO = "concat(replaceOne(toString({c}), ' ', 'T'), 'Z') AS {a}"
# Not a prefix of the window key: `chat@1.0`'s keys (`chat@1.0@1/...`) start with `chat@` too.
_REFERENCE_WINDOWS = (
    "SELECT window_key FROM detector_runs WHERE project_id = {p:String} "
    "AND reference = {ref:String}"
)


class NewReference(BaseModel):
    """Freeze calls as a reference: a time range, or the first `limit` calls after `since`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w.:@-]+$")
    service: str | None = None
    model: str | None = None
    agent: str | None = None
    version: str | None = Field(None, description="only calls of this service.version")
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = Field(None, ge=MIN_CALLS, le=1_000_000)


@router.post("/references", status_code=201, summary="Freeze a new reference version")
def post_reference(request: Request, principal: AdminKey, body: NewReference) -> dict[str, Any]:
    assert principal.project is not None
    scope = {
        "service": body.service,
        "model": body.model,
        "agent": body.agent,
        "version": body.version,
    }
    try:
        reference = create_reference(
            runtime(request).store,
            principal.project,
            body.name,
            {k: v for k, v in scope.items() if v},
            since=body.since,
            until=body.until,
            limit=body.limit,
        )
    except ReferenceError as exc:
        raise ApiError(400, str(exc)) from None
    return _reference(reference)


@router.get("/references", summary="The latest version of each reference")
def get_references(request: Request, principal: ReadKey) -> dict[str, Any]:
    return {
        "items": [_reference(r) for r in list_references(runtime(request).store, principal.project)]
    }


@router.get("/drift", summary="Drift statistics per window over time, oldest first")
def get_drift(
    request: Request,
    principal: ReadKey,
    reference: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> dict[str, Any]:
    where, params = _window_filter(principal, reference, since, until, "r.window_end")
    runs = runtime(request).store.query(
        "SELECT r.window_key AS window_key, r.reference AS reference, "
        "r.reference_version AS reference_version, r.scope AS scope, "
        f"{_ISO.format(c='r.window_start', a='window_start')}, "
        f"{_ISO.format(c='r.window_end', a='window_end')}, r.n_reference AS n_reference, "
        "r.n_current AS n_current, r.drifting AS drifting, r.consecutive AS consecutive, "
        "r.alerting AS alerting, r.flagged AS flagged, r.flag_counts AS flag_counts, "
        "r.queued AS queued "
        f"FROM detector_runs AS r FINAL WHERE {where} ORDER BY r.window_end DESC "
        "LIMIT {limit:UInt32}",
        {**params, "limit": limit},
    )
    keys = [run["window_key"] for run in runs]
    tests: dict[str, list[dict[str, Any]]] = {}
    if keys:
        for row in runtime(request).store.query(
            "SELECT window_key, detector, statistic, effect_size, p_value, rejected "
            "FROM findings FINAL WHERE project_id = {p:String} AND window_key IN {k:Array(String)}",
            {"p": principal.project, "k": keys},
        ):
            key = row.pop("window_key")
            row["rejected"] = bool(row["rejected"])
            tests.setdefault(key, []).append(row)
    for run in runs:
        run["scope"] = dict(run["scope"])
        run["flag_counts"] = dict(run["flag_counts"])
        for flag in ("drifting", "alerting"):
            run[flag] = bool(run[flag])
        run["tests"] = sorted(tests.get(run["window_key"], []), key=lambda t: t["detector"])
    return {"items": runs[::-1]}


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
    where, params = _window_filter(principal, None, since, until, "f.window_end")
    if reference:
        where += f" AND f.window_key IN ({_REFERENCE_WINDOWS})"
        params["ref"] = reference
    if detector:
        where += " AND f.detector = {detector:String}"
        params["detector"] = detector
    if rejected is not None:
        where += " AND f.rejected = {rejected:UInt8}"
        params["rejected"] = int(rejected)
    rows = runtime(request).store.query(
        "SELECT f.window_key AS window_key, f.scope AS scope, "
        f"{_ISO.format(c='f.window_end', a='window_end')}, f.detector AS detector, "
        "f.statistic AS statistic, f.effect_size AS effect_size, f.p_value AS p_value, "
        "f.rejected AS rejected, f.details AS details "
        f"FROM findings AS f FINAL WHERE {where} ORDER BY f.window_end DESC, f.detector "
        "LIMIT {limit:UInt32}",
        {**params, "limit": limit},
    )
    for row in rows:
        row["scope"] = dict(row["scope"])
        row["rejected"] = bool(row["rejected"])
        row["details"] = orjson.loads(row["details"]) if row["details"] else {}
    return {"items": rows}


@router.get("/review-queue", summary="Calls to review, highest priority first")
def get_review_queue(
    request: Request,
    principal: ReadKey,
    reason: str | None = None,
    source: Annotated[str | None, Query(pattern="^(flag|audit)$")] = None,
    reference: Annotated[str | None, Query(description="calls of this reference's windows")] = None,
    window_key: Annotated[str | None, Query(description="calls of one tested window")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = "q.project_id = {p:String}"
    params: dict[str, Any] = {"p": principal.project, "limit": limit}
    if reason:
        where += " AND has(q.reasons, {reason:String})"
        params["reason"] = reason
    if source:
        where += " AND q.source = {source:String}"
        params["source"] = source
    if reference:
        where += f" AND q.window_key IN ({_REFERENCE_WINDOWS})"
        params["ref"] = reference
    if window_key:
        where += " AND q.window_key = {window:String}"
        params["window"] = window_key
    rows = runtime(request).store.query(
        "SELECT q.trace_id AS trace_id, q.span_id AS span_id, "
        f"{_ISO.format(c='q.call_time', a='call_time')}, q.reasons AS reasons, "
        "q.scores AS scores, q.thresholds AS thresholds, q.notes AS notes, "
        "q.priority AS priority, q.source AS source, "
        "q.window_key AS window_key, c.input_text AS input_text, c.output_text AS output_text, "
        "c.response_model AS model, c.service AS service "
        "FROM review_queue AS q FINAL LEFT JOIN (SELECT project_id, trace_id, span_id, "
        "input_text, output_text, response_model, service FROM llm_calls "
        "WHERE project_id = {p:String}) AS c "
        "ON q.project_id = c.project_id AND q.trace_id = c.trace_id AND q.span_id = c.span_id "
        f"WHERE {where} ORDER BY q.priority DESC, q.call_time DESC LIMIT {{limit:UInt32}}",
        params,
    )
    for row in rows:
        for name in ("scores", "thresholds", "notes"):
            row[name] = dict(row[name])
    return {"items": rows}


def _window_filter(
    principal: Principal, reference: str | None, since: str | None, until: str | None, column: str
) -> tuple[str, dict[str, Any]]:
    where = column.split(".")[0] + ".project_id = {p:String}"
    params: dict[str, Any] = {"p": principal.project}
    if reference:
        where += " AND r.reference = {reference:String}"
        params["reference"] = reference
    lo, hi = parse_time(since, "since"), parse_time(until, "until")
    if lo is not None:
        where += f" AND {column} >= fromUnixTimestamp64Nano({{lo:Int64}}, 'UTC')"
        params["lo"] = lo
    if hi is not None:
        where += f" AND {column} < fromUnixTimestamp64Nano({{hi:Int64}}, 'UTC')"
        params["hi"] = hi
    return where, params


def _reference(reference: Reference) -> dict[str, Any]:
    return {
        "name": reference.name,
        "version": reference.version,
        "scope": reference.scope,
        "selector": reference.selector,
        "calls": reference.calls,
        "created_at": reference.created_at,
    }
