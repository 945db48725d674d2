"""The fine-tune room's tables: dataset snapshots, runs and their curves, model versions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from driftline.store.arrow import MS
from driftline.store.base import Store
from driftline.store.migrations import Migration

# What a fine-tune trained on: one row per export, with its filters, counts and content hash.
_DATASET_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS dataset_snapshots (
    project_id LowCardinality(String),
    id String,
    format LowCardinality(String),
    filters String,
    counts String,
    sha256 FixedString(64),
    rows UInt32,
    created_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (project_id, id)"""


# Fine-tunes: one row version per state change of a run; its curves, one row per figure and
# step; the registry of model versions with the gate's verdict and its evidence.
_FINETUNE_RUNS = """
CREATE TABLE IF NOT EXISTS finetune_runs (
    project_id LowCardinality(String),
    id String,
    snapshot_id String,
    method LowCardinality(String),
    base_model String,
    output String,
    params String CODEC(ZSTD(3)),
    status LowCardinality(String),
    error String CODEC(ZSTD(3)),
    step UInt32,
    total_steps UInt32,
    summary String CODEC(ZSTD(3)),
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, id)"""


_FINETUNE_METRICS = """
CREATE TABLE IF NOT EXISTS finetune_metrics (
    project_id LowCardinality(String),
    run_id String,
    step UInt32,
    name LowCardinality(String),
    value Float64,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (project_id, run_id, name, step)"""


_MODEL_VERSIONS = """
CREATE TABLE IF NOT EXISTS model_versions (
    project_id LowCardinality(String),
    version String,
    path String,
    base_version String,
    run_id String,
    snapshot_id String,
    method LowCardinality(String),
    status LowCardinality(String),
    verdict String CODEC(ZSTD(3)),
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, version)"""


MIGRATIONS = (
    Migration(5, "dataset snapshots", (_DATASET_SNAPSHOTS,)),
    Migration(
        6,
        "runs, their curves, model versions",
        (_FINETUNE_RUNS, _FINETUNE_METRICS, _MODEL_VERSIONS),
    ),
)


# -- the rows this room inserts (store/arrow.py) ------------------------------------------------

DATASET_SNAPSHOTS = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("format", pa.string()),
        ("filters", pa.string()),
        ("counts", pa.string()),
        ("sha256", pa.string()),
        ("rows", pa.uint32()),
        ("created_at", MS),
    ]
)
FINETUNE_RUNS = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("snapshot_id", pa.string()),
        ("method", pa.string()),
        ("base_model", pa.string()),
        ("output", pa.string()),
        ("params", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("step", pa.uint32()),
        ("total_steps", pa.uint32()),
        ("summary", pa.string()),
        ("created_at", MS),
        ("updated_at", MS),
    ]
)
FINETUNE_METRICS = pa.schema(
    [
        ("project_id", pa.string()),
        ("run_id", pa.string()),
        ("step", pa.uint32()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("at", MS),
    ]
)
MODEL_VERSIONS = pa.schema(
    [
        ("project_id", pa.string()),
        ("version", pa.string()),
        ("path", pa.string()),
        ("base_version", pa.string()),
        ("run_id", pa.string()),
        ("snapshot_id", pa.string()),
        ("method", pa.string()),
        ("status", pa.string()),
        ("verdict", pa.string()),
        ("created_at", MS),
        ("updated_at", MS),
    ]
)
SCHEMAS = {
    "dataset_snapshots": DATASET_SNAPSHOTS,
    "finetune_runs": FINETUNE_RUNS,
    "finetune_metrics": FINETUNE_METRICS,
    "model_versions": MODEL_VERSIONS,
}


# -- dataset snapshots ----------------------------------------------------------------------------

_SNAPSHOT_COLUMNS = "id, project_id, format, filters, counts, sha256, rows, created_at"


def insert_snapshots(store: Store, rows: pa.Table) -> None:
    """Rows of `DATASET_SNAPSHOTS`."""
    store.insert_arrow("dataset_snapshots", rows)


def snapshot_rows(store: Store, project: str, limit: int) -> list[dict[str, Any]]:
    """The project's snapshots, newest first."""
    return store.query(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM dataset_snapshots FINAL WHERE project_id = {{p:String}} "
        "ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "limit": limit},
    )


def snapshot_row(store: Store, project: str, snapshot_id: str) -> dict[str, Any] | None:
    """One of the project's snapshots, or None."""
    rows = store.query(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM dataset_snapshots FINAL "
        "WHERE project_id = {project:String} AND id = {id:String}",
        {"project": project, "id": snapshot_id},
    )
    return rows[0] if rows else None


# -- runs and their curves ------------------------------------------------------------------------

_RUN_COLUMNS = """id, project_id, snapshot_id, method, base_model, output, params, status, error,
    step, total_steps, summary, toUnixTimestamp64Milli(created_at) AS created_ms,
    toUnixTimestamp64Milli(updated_at) AS updated_ms"""


def insert_runs(store: Store, rows: pa.Table) -> None:
    """Rows of `FINETUNE_RUNS`: a run's state as of `updated_at`."""
    store.insert_arrow("finetune_runs", rows)


def run_rows(
    store: Store, project: str, run_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The project's runs (or one), newest first; times as `created_ms`, `updated_ms`."""
    return store.query(
        f"SELECT {_RUN_COLUMNS} FROM finetune_runs FINAL WHERE project_id = {{p:String}} "
        + ("AND id = {id:String} " if run_id else "")
        + "ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "id": run_id or "", "limit": limit},
    )


def runs_by_status(store: Store) -> list[dict[str, Any]]:
    """How many runs each (project_id, method, status) has: n."""
    return store.query(
        "SELECT project_id, method, status, count() AS n FROM finetune_runs FINAL "
        "GROUP BY project_id, method, status"
    )


def latest_runs(store: Store) -> list[dict[str, Any]]:
    """The latest run of each (project_id, method): its id (`run`) and step."""
    return store.query(
        "SELECT project_id, method, argMax(id, created_at) AS run, "
        "argMax(step, created_at) AS step FROM finetune_runs FINAL GROUP BY project_id, method"
    )


def insert_metrics(store: Store, rows: pa.Table) -> None:
    """Rows of `FINETUNE_METRICS`: one per figure and step."""
    store.insert_arrow("finetune_metrics", rows)


def read_curves(store: Store, project: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """A run's figures over steps: name -> [(step, value)]."""
    rows = store.query(
        "SELECT name, step, value FROM finetune_metrics FINAL WHERE project_id = {p:String} "
        "AND run_id = {r:String} ORDER BY name, step",
        {"p": project, "r": run_id},
    )
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        curves.setdefault(r["name"], []).append((int(r["step"]), float(r["value"])))
    return curves


def last_figures(store: Store, project: str, run_id: str, names: list[str]) -> list[dict[str, Any]]:
    """The last value (by step) of each of a run's figures named in `names`: name, value."""
    return store.query(
        "SELECT name, argMax(value, step) AS value FROM finetune_metrics FINAL "
        "WHERE project_id = {p:String} AND run_id = {r:String} "
        "AND name IN {names:Array(String)} GROUP BY name",
        {"p": project, "r": run_id, "names": names},
    )


def training_curves(store: Store, project: str, days: int) -> list[dict[str, Any]]:
    """Loss and reward margin of the project's runs over the last `days`, by time: run (method
    and id prefix), name, t (Unix seconds), value."""
    return store.query(
        "SELECT concat(r.method, ' ', substring(m.run_id, 1, 8)) AS run, m.name AS name, "
        "toUnixTimestamp(m.at) AS t, m.value AS value FROM finetune_metrics AS m FINAL "
        "JOIN (SELECT id, method FROM finetune_runs FINAL WHERE project_id = {p:String}) AS r "
        "ON r.id = m.run_id WHERE m.project_id = {p:String} "
        "AND m.name IN ('loss', 'reward_margin') AND m.at > now() - toIntervalDay({days:UInt32}) "
        "ORDER BY t, m.step",
        {"p": project, "days": days},
    )


# -- model versions -------------------------------------------------------------------------------


def insert_versions(store: Store, rows: pa.Table) -> None:
    """Rows of `MODEL_VERSIONS`: a version's state as of `updated_at`."""
    store.insert_arrow("model_versions", rows)


def version_rows(store: Store, project: str | None) -> list[dict[str, Any]]:
    """The project's versions (every project's with None), oldest first; times as
    `created_ms`, `updated_ms`."""
    return store.query(
        "SELECT project_id, version, path, base_version, run_id, snapshot_id, method, status, "
        "verdict, toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms FROM model_versions FINAL "
        + ("WHERE project_id = {p:String} " if project is not None else "")
        + "ORDER BY project_id, created_at, version",
        {"p": project or ""},
    )


# -- reads other rooms make (they never name these tables) -------------------------------------


def versions_changed(
    store: Store, status: str, since_ns: int, until_ns: int
) -> list[dict[str, Any]]:
    """Model versions that took `status` in (since, until]: project_id, version, method, path,
    base_version, win_rate (the gate's) and reasons (JSON texts)."""
    return store.query(
        "SELECT project_id, version, method, path, base_version, "
        "JSONExtractFloat(verdict, 'win_rate', 'rate') AS win_rate, "
        "JSONExtractArrayRaw(verdict, 'reasons') AS reasons FROM model_versions FINAL "
        "WHERE status = {status:String} "
        "AND updated_at > fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND updated_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')",
        {"status": status, "since": since_ns, "until": until_ns},
    )
