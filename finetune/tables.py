"""The fine-tune room's tables: dataset snapshots, runs and their curves, model versions."""

from __future__ import annotations

from typing import Any

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
