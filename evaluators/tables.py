"""The evaluators' tables: how far each evaluator version has read the new calls, and what it
graded and spent each day (its budgets hold across restarts). Their scores are feedback rows
(review room, source `judge`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from driftline.store import Store
from driftline.store.arrow import table_of
from driftline.store.migrations import Migration

_PROGRESS = """
CREATE TABLE IF NOT EXISTS evaluator_progress (
    evaluator LowCardinality(String),
    version LowCardinality(String),
    ingested_ns Int64,
    cursor_project String,
    cursor_trace String,
    cursor_span String,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (evaluator, version)"""

# One row per evaluator version, day, project and service: the day's totals so far.
_DAYS = """
CREATE TABLE IF NOT EXISTS evaluator_days (
    evaluator LowCardinality(String),
    version LowCardinality(String),
    day Date,
    project_id LowCardinality(String),
    service LowCardinality(String),
    graded UInt64,
    failed UInt64,
    cost_usd Float64,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (evaluator, version, day, project_id, service)"""

MIGRATIONS = (Migration(12, "online evaluators' progress and daily totals", (_PROGRESS, _DAYS)),)

PROGRESS = pa.schema(
    [
        ("evaluator", pa.string()),
        ("version", pa.string()),
        ("ingested_ns", pa.int64()),
        ("cursor_project", pa.string()),
        ("cursor_trace", pa.string()),
        ("cursor_span", pa.string()),
    ]
)
DAYS = pa.schema(
    [
        ("evaluator", pa.string()),
        ("version", pa.string()),
        ("day", pa.date32()),
        ("project_id", pa.string()),
        ("service", pa.string()),
        ("graded", pa.uint64()),
        ("failed", pa.uint64()),
        ("cost_usd", pa.float64()),
    ]
)
SCHEMAS = {"evaluator_progress": PROGRESS, "evaluator_days": DAYS}


@dataclass(frozen=True)
class Position:
    """Every call ingested before `ingested_ns`, and at it up to the key, has been read."""

    ingested_ns: int
    key: tuple[str, str, str] = ("", "", "")


def position(store: Store, evaluator: str, version: str) -> Position | None:
    rows = store.query(
        "SELECT ingested_ns, cursor_project, cursor_trace, cursor_span FROM evaluator_progress "
        "FINAL WHERE evaluator = {e:String} AND version = {v:String}",
        {"e": evaluator, "v": version},
    )
    if not rows:
        return None
    r = rows[0]
    return Position(
        int(r["ingested_ns"]), (r["cursor_project"], r["cursor_trace"], r["cursor_span"])
    )


def save_position(store: Store, evaluator: str, version: str, at: Position) -> None:
    row = {
        "evaluator": [evaluator],
        "version": [version],
        "ingested_ns": [at.ingested_ns],
        "cursor_project": [at.key[0]],
        "cursor_trace": [at.key[1]],
        "cursor_span": [at.key[2]],
    }
    store.insert_arrow("evaluator_progress", table_of(PROGRESS, row))  # fmt: skip


@dataclass
class DayTotal:
    graded: int = 0
    failed: int = 0
    cost_usd: float = 0.0


def day_totals(
    store: Store, evaluator: str, version: str, day: date
) -> dict[tuple[str, str], DayTotal]:
    """(project, service) → what the evaluator version graded, failed and spent on `day`."""
    rows = store.query(
        "SELECT project_id, service, graded, failed, cost_usd FROM evaluator_days FINAL "
        "WHERE evaluator = {e:String} AND version = {v:String} AND day = {d:Date}",
        {"e": evaluator, "v": version, "d": day.isoformat()},
    )
    return {
        (r["project_id"], r["service"]): DayTotal(r["graded"], r["failed"], r["cost_usd"])
        for r in rows
    }


def save_day_totals(
    store: Store, evaluator: str, version: str, day: date, totals: dict[tuple[str, str], DayTotal]
) -> None:
    if not totals:
        return
    scopes = sorted(totals)
    columns = {
        "evaluator": [evaluator] * len(scopes),
        "version": [version] * len(scopes),
        "day": [day] * len(scopes),
        "project_id": [project for project, _ in scopes],
        "service": [service for _, service in scopes],
        "graded": [totals[s].graded for s in scopes],
        "failed": [totals[s].failed for s in scopes],
        "cost_usd": [totals[s].cost_usd for s in scopes],
    }
    store.insert_arrow("evaluator_days", table_of(DAYS, columns))


def project_totals(store: Store, project: str, day: date) -> dict[tuple[str, str], DayTotal]:
    """(evaluator, version) → what it graded, failed and spent on the project's calls on `day`."""
    rows = store.query(
        "SELECT evaluator, version, sum(graded) AS graded, sum(failed) AS failed, "
        "sum(cost_usd) AS cost FROM evaluator_days FINAL WHERE project_id = {p:String} "
        "AND day = {d:Date} GROUP BY evaluator, version",
        {"p": project, "d": day.isoformat()},
    )
    return {
        (r["evaluator"], r["version"]): DayTotal(r["graded"], r["failed"], r["cost"]) for r in rows
    }
