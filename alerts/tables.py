"""The alert engine's tables: alert states, groups, silences, the outbox, retraining jobs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from driftline.store.arrow import MS, text_map
from driftline.store.base import Store
from driftline.store.migrations import Migration
from driftline.store.sql import Where, bind

_ALERTS = """
CREATE TABLE IF NOT EXISTS alerts (
    project_id LowCardinality(String),
    fingerprint String,
    rule LowCardinality(String),
    labels Map(LowCardinality(String), String),
    annotations Map(LowCardinality(String), String),
    state LowCardinality(String),
    value Float64,
    evidence String CODEC(ZSTD(3)),
    active_at DateTime64(3, 'UTC'),
    fired_at Nullable(DateTime64(3, 'UTC')),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, fingerprint, active_at)"""


# What each notification group last told its receiver, so a restart repeats nothing.
_ALERT_GROUPS = """
CREATE TABLE IF NOT EXISTS alert_groups (
    group_key String,
    receiver LowCardinality(String),
    sequence UInt64,
    notified Map(String, String),
    notified_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (receiver, group_key)"""


_SILENCES = """
CREATE TABLE IF NOT EXISTS silences (
    project_id LowCardinality(String),
    id String,
    matchers String,
    starts_at DateTime64(3, 'UTC'),
    ends_at DateTime64(3, 'UTC'),
    created_by String,
    comment String,
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, id)"""


# The outbox: every message is stored before its first attempt and kept after its last.
_NOTIFICATIONS = """
CREATE TABLE IF NOT EXISTS notifications (
    project_id LowCardinality(String),
    id String,
    receiver LowCardinality(String),
    kind LowCardinality(String),
    group_key String,
    body String CODEC(ZSTD(3)),
    status LowCardinality(String),
    attempts UInt32,
    next_attempt_at DateTime64(3, 'UTC'),
    last_error String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (project_id, id)"""


_NOTIFICATION_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS notification_attempts (
    project_id LowCardinality(String),
    notification_id String,
    attempt UInt32,
    at DateTime64(3, 'UTC'),
    status_code UInt16,
    error String,
    duration_ms Float64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (project_id, notification_id, attempt)"""


_RETRAIN_JOBS = """
CREATE TABLE IF NOT EXISTS retrain_jobs (
    project_id LowCardinality(String),
    id String,
    rule LowCardinality(String),
    fingerprint String,
    reason String,
    evidence String CODEC(ZSTD(3)),
    snapshot String CODEC(ZSTD(3)),
    launcher LowCardinality(String),
    status LowCardinality(String),
    exit_code Nullable(Int32),
    output String CODEC(ZSTD(3)),
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, id)"""


MIGRATIONS = (
    Migration(
        4,
        "alert states, groups, silences, outbox, retraining jobs",
        (_ALERTS, _ALERT_GROUPS, _SILENCES, _NOTIFICATIONS, _NOTIFICATION_ATTEMPTS, _RETRAIN_JOBS),
    ),
)


# -- the rows this room inserts (store/arrow.py) ------------------------------------------------

ALERTS = pa.schema(
    [
        ("project_id", pa.string()),
        ("fingerprint", pa.string()),
        ("rule", pa.string()),
        ("labels", text_map()),
        ("annotations", text_map()),
        ("state", pa.string()),
        ("value", pa.float64()),
        ("evidence", pa.string()),
        ("active_at", MS),
        ("fired_at", MS),
        ("resolved_at", MS),
        ("updated_at", MS),
    ]
)
ALERT_GROUPS = pa.schema(
    [
        ("group_key", pa.string()),
        ("receiver", pa.string()),
        ("sequence", pa.uint64()),
        ("notified", text_map()),
        ("notified_at", MS),
        ("updated_at", MS),
    ]
)
SILENCES = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("matchers", pa.string()),
        ("starts_at", MS),
        ("ends_at", MS),
        ("created_by", pa.string()),
        ("comment", pa.string()),
        ("updated_at", MS),
    ]
)
NOTIFICATIONS = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("receiver", pa.string()),
        ("kind", pa.string()),
        ("group_key", pa.string()),
        ("body", pa.binary()),
        ("status", pa.string()),
        ("attempts", pa.uint32()),
        ("next_attempt_at", MS),
        ("last_error", pa.string()),
        ("created_at", MS),
        ("updated_at", MS),
    ]
)
NOTIFICATION_ATTEMPTS = pa.schema(
    [
        ("project_id", pa.string()),
        ("notification_id", pa.string()),
        ("attempt", pa.uint32()),
        ("at", MS),
        ("status_code", pa.uint16()),
        ("error", pa.string()),
        ("duration_ms", pa.float64()),
    ]
)
RETRAIN_JOBS = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("rule", pa.string()),
        ("fingerprint", pa.string()),
        ("reason", pa.string()),
        ("evidence", pa.string()),
        ("snapshot", pa.string()),
        ("launcher", pa.string()),
        ("status", pa.string()),
        ("exit_code", pa.int32()),
        ("output", pa.string()),
        ("created_at", MS),
        ("updated_at", MS),
    ]
)
SCHEMAS = {
    "alerts": ALERTS,
    "alert_groups": ALERT_GROUPS,
    "silences": SILENCES,
    "notifications": NOTIFICATIONS,
    "notification_attempts": NOTIFICATION_ATTEMPTS,
    "retrain_jobs": RETRAIN_JOBS,
}

# -- reads ------------------------------------------------------------------------------------


def last_jobs(store: Store, rule: str) -> dict[str, int]:
    """project → when `rule` last started a retraining job there (Unix ms)."""
    rows = store.query(
        "SELECT project_id, toUnixTimestamp64Milli(max(created_at)) AS ms FROM retrain_jobs FINAL "
        "WHERE rule = {rule:String} GROUP BY project_id",
        {"rule": rule},
    )
    return {row["project_id"]: int(row["ms"]) for row in rows}


def notifications(
    store: Store, project: str, status: str | None, receiver: str | None, limit: int
) -> list[dict[str, Any]]:
    """The project's notifications, newest first, each with its delivery `attempts`."""
    where = Where("project_id = {p:String}", p=project).equals("status", status)
    where.equals("receiver", receiver)
    rows = store.query(
        "SELECT id, receiver, kind, group_key, status, attempts, last_error, body, "
        "toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(next_attempt_at) AS next_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms "
        f"FROM notifications FINAL WHERE {where} ORDER BY created_at DESC LIMIT {{limit:UInt32}}",
        bind(where, {"limit": limit}),
    )
    tried: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    if rows:
        for attempt in store.query(
            "SELECT notification_id, attempt, toUnixTimestamp64Milli(at) AS at_ms, status_code, "
            "error, duration_ms FROM notification_attempts WHERE project_id = {p:String} "
            "AND notification_id IN {ids:Array(String)} ORDER BY attempt",
            {"p": project, "ids": list(tried)},
        ):
            tried[attempt.pop("notification_id")].append(attempt)
    return [{**row, "tried": tried[row["id"]]} for row in rows]


def retrain_jobs(store: Store, project: str, limit: int) -> list[dict[str, Any]]:
    """The project's retraining jobs, newest first."""
    return store.query(
        "SELECT id, rule, fingerprint, reason, evidence, snapshot, launcher, status, exit_code, "
        "output, toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms FROM retrain_jobs FINAL "
        "WHERE project_id = {p:String} ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "limit": limit},
    )
