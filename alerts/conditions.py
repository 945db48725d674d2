"""Each rule condition as a query: what is active now, per label set, with its evidence."""

from __future__ import annotations

import json
from typing import Any

from driftline.alerts.rules import (
    DriftCondition,
    FeedbackCondition,
    FlagsCondition,
    MetricCondition,
    ModelCondition,
    Rule,
)
from driftline.alerts.state import Sample
from driftline.store import Store

_SINCE = "fromUnixTimestamp64Milli({since:Int64}, 'UTC')"
_NOW = "fromUnixTimestamp64Milli({now:Int64}, 'UTC')"

_METRICS = {
    "calls": "toFloat64(count())",
    "error_rate": "countIf(error_type != '' OR status_code = 'error') / count()",
    "p50_latency_ms": "quantile(0.5)(duration_ms)",
    "p95_latency_ms": "quantile(0.95)(duration_ms)",
    "p99_latency_ms": "quantile(0.99)(duration_ms)",
    "tokens_per_call": "avg(total_tokens)",
    "cost_per_call": "avg(cost_usd)",
}
_DIMENSIONS = {
    "service": "service",
    "model": "if(response_model != '', response_model, request_model)",
    "agent": "agent_name",
    "environment": "environment",
    "service_version": "service_version",
    "provider": "provider",
}


def evaluate(store: Store, rule: Rule, now: float) -> list[Sample]:
    """The label sets for which `rule`'s condition holds at `now` (epoch seconds)."""
    condition = rule.when.condition
    params: dict[str, Any] = {"now": round(now * 1000)}
    if isinstance(condition, DriftCondition):
        samples = _drift(store, condition, params)
    elif isinstance(condition, FlagsCondition):
        samples = _flags(store, condition, params)
    elif isinstance(condition, MetricCondition):
        samples = _metric(store, condition, params)
    elif isinstance(condition, ModelCondition):
        samples = _model(store, condition, params)
    else:
        samples = _feedback(store, condition, rule.alert, params)
    for sample in samples:
        sample.labels = {**sample.labels, **rule.labels, "alertname": rule.alert}
    return samples


def _of_reference(reference: str | None, params: dict[str, Any]) -> str:
    """The SQL condition for one reference's windows (empty for every reference)."""
    if not reference:
        return ""
    params["reference"] = reference
    return " AND reference = {reference:String}"


def _drift(store: Store, c: DriftCondition, params: dict[str, Any]) -> list[Sample]:
    where = "window_end <= " + _NOW + _of_reference(c.reference, params)
    rows = store.query(
        "SELECT project_id, reference, argMax(reference_version, window_end) AS version, "
        "argMax(scope, window_end) AS scope, argMax(consecutive, window_end) AS consecutive, "
        "argMax(window_key, window_end) AS window_key "
        f"FROM detector_runs FINAL WHERE {where} GROUP BY project_id, reference",
        params,
    )
    samples = []
    for row in rows:
        if row["consecutive"] < c.consecutive:
            continue
        tests = store.query(
            "SELECT detector, statistic, p_value, rejected FROM findings FINAL "
            "WHERE project_id = {p:String} AND window_key = {k:String} ORDER BY detector",
            {"p": row["project_id"], "k": row["window_key"]},
        )
        samples.append(
            Sample(
                labels={
                    "project": row["project_id"],
                    "reference": row["reference"],
                    **dict(row["scope"]),
                },
                value=float(row["consecutive"]),
                evidence={
                    "reference_version": row["version"],
                    "window_key": row["window_key"],
                    "consecutive_windows": row["consecutive"],
                    "tests": [{**t, "rejected": bool(t["rejected"])} for t in tests],
                },
            )
        )
    return samples


def _flags(store: Store, c: FlagsCondition, params: dict[str, Any]) -> list[Sample]:
    params.update(since=params["now"] - round(c.over * 1000), reason=c.reason)
    where = f"window_end > {_SINCE} AND window_end <= {_NOW}" + _of_reference(c.reference, params)
    rows = store.query(
        "SELECT project_id, reference, argMax(scope, window_end) AS scope, "
        "sum(n_current) AS calls, sum(flag_counts[{reason:String}]) AS flagged, "
        "groupArray(window_key) AS windows "
        f"FROM detector_runs FINAL WHERE {where} GROUP BY project_id, reference",
        params,
    )
    samples = []
    for row in rows:
        rate = row["flagged"] / row["calls"] if row["calls"] else 0.0
        active = (
            rate > c.rate_above if c.rate_above is not None else row["flagged"] >= (c.at_least or 0)
        )
        if not active:
            continue
        samples.append(
            Sample(
                labels={
                    "project": row["project_id"],
                    "reference": row["reference"],
                    "reason": c.reason,
                    **dict(row["scope"]),
                },
                value=rate if c.rate_above is not None else float(row["flagged"]),
                evidence={
                    "flagged": row["flagged"],
                    "calls": row["calls"],
                    "rate": rate,
                    "windows": sorted(row["windows"]),
                },
            )
        )
    return samples


def _metric(store: Store, c: MetricCondition, params: dict[str, Any]) -> list[Sample]:
    params.update(since=params["now"] - round(c.over * 1000), min_calls=c.min_calls)
    dims = ", ".join(f"{_DIMENSIONS[d]} AS {d}" for d in c.by)
    group = ", ".join(["project_id", *c.by])
    rows = store.query(
        f"SELECT project_id, {dims + ', ' if dims else ''}count() AS calls, "
        f"{_METRICS[c.metric]} AS value FROM llm_calls "
        f"WHERE start_time > {_SINCE} AND start_time <= {_NOW} "
        f"GROUP BY {group} HAVING calls >= {{min_calls:UInt32}}",
        params,
    )
    return [
        Sample(
            labels={"project": row["project_id"], **{d: str(row[d]) for d in c.by}},
            value=float(row["value"]),
            evidence={"metric": c.metric, "calls": row["calls"], "over_seconds": c.over},
        )
        for row in rows
        if c.breached(float(row["value"]))
    ]


def _feedback(
    store: Store, c: FeedbackCondition, rule: str, params: dict[str, Any]
) -> list[Sample]:
    where = "f.ingested_at <= " + _NOW
    if c.names:
        where += " AND f.name IN {names:Array(String)}"
        params["names"] = c.names
    params.update(rule=rule, at_least=c.at_least)
    rows = store.query(
        "SELECT f.project_id AS project_id, count() AS n, "
        "toUnixTimestamp64Milli(max(f.ingested_at)) AS last_ms FROM feedback AS f FINAL "
        "LEFT JOIN (SELECT project_id, max(created_at) AS since FROM retrain_jobs FINAL "
        "WHERE rule = {rule:String} GROUP BY project_id) AS j ON f.project_id = j.project_id "
        f"WHERE {where} AND f.ingested_at > j.since "
        "GROUP BY f.project_id HAVING n >= {at_least:UInt64}",
        params,
    )
    return [
        Sample(
            labels={"project": row["project_id"]},
            value=float(row["n"]),
            evidence={"new_feedback": row["n"], "feedback_until_ms": row["last_ms"]},
        )
        for row in rows
    ]


def _model(store: Store, c: ModelCondition, params: dict[str, Any]) -> list[Sample]:
    params.update(status=c.status, since=params["now"] - round(c.over * 1000))
    rows = store.query(
        "SELECT project_id, version, method, path, base_version, "
        "JSONExtractFloat(verdict, 'win_rate', 'rate') AS win_rate, "
        "JSONExtractArrayRaw(verdict, 'reasons') AS reasons FROM model_versions FINAL "
        f"WHERE status = {{status:String}} AND updated_at > {_SINCE} AND updated_at <= {_NOW}",
        params,
    )
    return [
        Sample(
            labels={
                "project": row["project_id"],
                "version": row["version"],
                "method": row["method"] or "registered",
            },
            value=row["win_rate"],
            evidence={
                "path": row["path"],
                "base_version": row["base_version"],
                "win_rate": row["win_rate"],
                "reasons": [json.loads(r) for r in row["reasons"]],
            },
        )
        for row in rows
    ]
