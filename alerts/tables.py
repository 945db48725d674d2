"""The alert engine's tables: alert states, groups, silences, the outbox, retraining jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from driftline.store.arrow import MS, table_of, text_map
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

# -- the queries on these tables, by table -----------------------------------------------------

# alerts


def insert_alerts(store: Store, columns: Mapping[str, Any]) -> None:
    """Store alert versions (columns of ALERTS); returns nothing."""
    store.insert_arrow("alerts", table_of(ALERTS, columns))


def alerts(
    store: Store,
    project: str | None,
    states: Sequence[str],
    rule: str | None,
    fingerprint: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Alerts newest first, all or those of `project`, in `states`, of `rule`...: rule, labels,
    annotations, state, value, evidence (JSON), active_ms, fired_ms, resolved_ms, updated_ms."""
    where = Where().equals("project_id", project).equals("rule", rule)
    where.equals("fingerprint", fingerprint)
    if states:
        where.add("state IN {states:Array(String)}", states=list(states))
    return _alerts(store, where, limit)


def current_alerts(store: Store, resolved_since_ms: int) -> list[dict[str, Any]]:
    """Pending and firing alerts, and those resolved since `resolved_since_ms` (Unix ms), with
    the columns of `alerts`."""
    return _alerts(
        store,
        Where(
            "state IN ('pending', 'firing') OR (state = 'resolved' "
            "AND resolved_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC'))",
            since=resolved_since_ms,
        ),
    )


def _alerts(store: Store, where: Where, limit: int = 100_000) -> list[dict[str, Any]]:
    return store.query(
        "SELECT rule, labels, annotations, state, value, evidence, "
        "toUnixTimestamp64Milli(active_at) AS active_ms, "
        "toUnixTimestamp64Milli(fired_at) AS fired_ms, "
        "toUnixTimestamp64Milli(resolved_at) AS resolved_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms "
        f"FROM alerts FINAL WHERE {where} ORDER BY active_at DESC LIMIT {{limit:UInt32}}",
        bind(where, {"limit": limit}),
    )


# alert_groups


def insert_alert_groups(store: Store, columns: Mapping[str, Any]) -> None:
    """Store notification group states (columns of ALERT_GROUPS); returns nothing."""
    store.insert_arrow("alert_groups", table_of(ALERT_GROUPS, columns))


def alert_groups(store: Store) -> list[dict[str, Any]]:
    """Every group's latest state: group_key, receiver, sequence, notified and notified_ms."""
    return store.query(
        "SELECT group_key, receiver, sequence, notified, "
        "toUnixTimestamp64Milli(notified_at) AS notified_ms FROM alert_groups FINAL"
    )


# silences


def insert_silences(store: Store, columns: Mapping[str, Any]) -> None:
    """Store silence versions (columns of SILENCES); returns nothing."""
    store.insert_arrow("silences", table_of(SILENCES, columns))


def silences(store: Store, project: str | None) -> list[dict[str, Any]]:
    """The silences of `project` (every project's when None), latest starting first: project_id,
    id, matchers (JSON), starts_ms, ends_ms, created_by, comment."""
    where = Where()
    if project is not None:
        where.add("project_id = {p:String}", p=project)
    return store.query(
        "SELECT project_id, id, matchers, toUnixTimestamp64Milli(starts_at) AS starts_ms, "
        "toUnixTimestamp64Milli(ends_at) AS ends_ms, created_by, comment "
        f"FROM silences FINAL WHERE {where} ORDER BY starts_at DESC",
        where.params,
    )


def silence_version(store: Store, silence_id: str) -> int:
    """When the silence's latest version was stored (Unix ms; 0 when it has none)."""
    rows = store.query(
        "SELECT toUnixTimestamp64Milli(max(updated_at)) AS ms FROM silences WHERE id = {id:String}",
        {"id": silence_id},
    )
    return int(rows[0]["ms"] or 0) if rows else 0


# notifications, notification_attempts

_NOTIFICATION_COLUMNS = """project_id, id, receiver, kind, group_key, body, attempts, last_error,
    toUnixTimestamp64Milli(next_attempt_at) AS next_ms,
    toUnixTimestamp64Milli(created_at) AS created_ms,
    toUnixTimestamp64Milli(updated_at) AS updated_ms"""


def insert_notifications(store: Store, rows: list[dict[str, Any]]) -> None:
    """Store notification versions (rows of NOTIFICATIONS); returns nothing."""
    store.insert_arrow("notifications", pa.Table.from_pylist(rows, NOTIFICATIONS))


def insert_notification_attempts(store: Store, rows: list[dict[str, Any]]) -> None:
    """Store delivery attempts (rows of NOTIFICATION_ATTEMPTS); returns nothing."""
    store.insert_arrow("notification_attempts", pa.Table.from_pylist(rows, NOTIFICATION_ATTEMPTS))


def notifications_in(
    store: Store, status: str, message_id: str | None = None, project: str | None = None
) -> list[dict[str, Any]]:
    """The notifications whose latest version is in `status` (just `message_id`, of `project`,
    when given): project_id, id, receiver, kind, group_key, body, attempts, last_error,
    next_ms, created_ms, updated_ms."""
    where = Where()
    if message_id is not None:
        where.add("id = {id:String}", id=message_id)
    where.add("status = {status:String}", status=status)
    if project is not None:
        where.add("project_id = {project:String}", project=project)
    return store.query(
        f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications FINAL WHERE {where}", where.params
    )


def count_notifications(store: Store, status: str) -> int:
    """How many notifications' latest version is in `status`."""
    rows = store.query(
        "SELECT count() AS n FROM notifications FINAL WHERE status = {status:String}",
        {"status": status},
    )
    return int(rows[0]["n"])


def stored_notification_ids(store: Store, ids: Sequence[str]) -> list[str]:
    """Those of `ids` the outbox has stored, each once."""
    rows = store.query(
        "SELECT DISTINCT id FROM notifications WHERE id IN {ids:Array(String)}",
        {"ids": list(ids)},
    )
    return [row["id"] for row in rows]


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


# retrain_jobs


def insert_retrain_jobs(store: Store, columns: Mapping[str, Any]) -> None:
    """Store retraining job versions (columns of RETRAIN_JOBS); returns nothing."""
    store.insert_arrow("retrain_jobs", table_of(RETRAIN_JOBS, columns))


def last_job(store: Store, project: str, rule: str) -> int | None:
    """When `rule` last started a retraining job in `project` (Unix ms), None if it never did."""
    rows = store.query(
        "SELECT toUnixTimestamp64Milli(max(created_at)) AS ms, count() AS n "
        "FROM retrain_jobs FINAL WHERE project_id = {p:String} AND rule = {r:String}",
        {"p": project, "r": rule},
    )
    return int(rows[0]["ms"]) if rows and rows[0]["n"] else None


def last_jobs(store: Store, rule: str) -> dict[str, int]:
    """project → when `rule` last started a retraining job there (Unix ms)."""
    rows = store.query(
        "SELECT project_id, toUnixTimestamp64Milli(max(created_at)) AS ms FROM retrain_jobs FINAL "
        "WHERE rule = {rule:String} GROUP BY project_id",
        {"rule": rule},
    )
    return {row["project_id"]: int(row["ms"]) for row in rows}


def retrain_jobs(store: Store, project: str, limit: int) -> list[dict[str, Any]]:
    """The project's retraining jobs, newest first."""
    return store.query(
        "SELECT id, rule, fingerprint, reason, evidence, snapshot, launcher, status, exit_code, "
        "output, toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms FROM retrain_jobs FINAL "
        "WHERE project_id = {p:String} ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "limit": limit},
    )


def interrupt_running_jobs(store: Store) -> None:
    """End every job still `running` as `interrupted` (a new version); returns nothing."""
    # The filter sits in a subquery: in the outer WHERE, `status` would be the replaced one.
    store.command(
        "INSERT INTO retrain_jobs SELECT * REPLACE ('interrupted' AS status, "
        "greatest(now64(3), updated_at + toIntervalMillisecond(1)) AS updated_at) "
        "FROM (SELECT * FROM retrain_jobs FINAL WHERE status = 'running')"
    )
