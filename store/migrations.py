"""Forward-only, versioned schema migrations and per-table retention."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from driftline.store.base import Store, StoreError

_BODY = "String CODEC(ZSTD(3))"
_ATTRS = "Map(LowCardinality(String), String) CODEC(ZSTD(3))"

_SPAN_IDENTITY = """
    project_id LowCardinality(String),
    trace_id FixedString(32),
    span_id FixedString(16),
    parent_span_id String,
    start_time DateTime64(9, 'UTC'),
    end_time DateTime64(9, 'UTC'),
    duration_ms Float64,
    service LowCardinality(String),
    service_version LowCardinality(String),
    environment LowCardinality(String),
    span_name String,
    status_code LowCardinality(String),
    status_message String,"""

# Rows are written once; ReplacingMergeTree on (trace_id, span_id) is only the backstop that
# collapses a span two collectors stored at the same moment. Reads use FINAL.
_SPAN_TABLE_TAIL = f"""
    attributes {_ATTRS},
    resource_attributes {_ATTRS},
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, start_time, trace_id, span_id)"""

_LLM_CALLS = f"""
CREATE TABLE IF NOT EXISTS llm_calls ({_SPAN_IDENTITY}
    operation LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    response_model LowCardinality(String),
    input_messages {_BODY},
    output_messages {_BODY},
    input_text {_BODY},
    output_text {_BODY},
    input_tokens UInt32,
    output_tokens UInt32,
    total_tokens UInt32,
    cost_usd Float64,
    finish_reasons Array(LowCardinality(String)),
    error_type LowCardinality(String),
    conversation_id String,
    user_id String,
    agent_name LowCardinality(String),{_SPAN_TABLE_TAIL}"""

_SPANS = f"""
CREATE TABLE IF NOT EXISTS spans ({_SPAN_IDENTITY}
    kind LowCardinality(String),
    scope_name LowCardinality(String),
    events {_BODY},
    links {_BODY},{_SPAN_TABLE_TAIL}"""

_PROJECTS = """
CREATE TABLE IF NOT EXISTS projects (
    project_id String,
    created_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY project_id"""

# A revocation is a newer version of the key's row; reads take the latest with FINAL.
_API_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id String,
    project_id String,
    role LowCardinality(String),
    secret_sha256 FixedString(64),
    name String,
    created_at DateTime64(3, 'UTC'),
    revoked UInt8,
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY key_id"""


# Judgements on calls: an app's thumbs-up through the SDK, a reviewer's score. Keyed by the
# sender's id, so a retried request is stored once.
_FEEDBACK = """
CREATE TABLE IF NOT EXISTS feedback (
    project_id LowCardinality(String),
    id String,
    trace_id String,
    span_id String,
    name LowCardinality(String),
    kind LowCardinality(String),
    value_number Nullable(Float64),
    value_string String,
    comment String CODEC(ZSTD(3)),
    user_id String,
    source LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (project_id, created_at, id)"""


# Detectors. Embeddings of each call's prompt and response, computed once per call and model.
_CALL_EMBEDDINGS = """
CREATE TABLE IF NOT EXISTS call_embeddings (
    project_id LowCardinality(String),
    trace_id FixedString(32),
    span_id FixedString(16),
    start_time DateTime64(9, 'UTC'),
    model LowCardinality(String),
    prompt_vector Array(Float32),
    response_vector Array(Float32),
    embedded_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, model, start_time, trace_id, span_id)"""

# A reference is a frozen, versioned set of calls that later windows are compared with.
_REFERENCES = """
CREATE TABLE IF NOT EXISTS drift_references (
    project_id LowCardinality(String),
    name String,
    version UInt32,
    scope Map(LowCardinality(String), String),
    selector String,
    calls UInt32,
    created_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (project_id, name, version)"""

_REFERENCE_CALLS = """
CREATE TABLE IF NOT EXISTS reference_calls (
    project_id LowCardinality(String),
    name String,
    version UInt32,
    trace_id FixedString(32),
    span_id FixedString(16)
) ENGINE = ReplacingMergeTree
ORDER BY (project_id, name, version, trace_id, span_id)"""

# One row per (scope, window): a window is tested once, so a rerun replaces nothing.
_DETECTOR_RUNS = """
CREATE TABLE IF NOT EXISTS detector_runs (
    project_id LowCardinality(String),
    window_key String,
    scope Map(LowCardinality(String), String),
    reference String,
    reference_version UInt32,
    window_start DateTime64(9, 'UTC'),
    window_end DateTime64(9, 'UTC'),
    n_reference UInt32,
    n_current UInt32,
    drifting UInt8,
    consecutive UInt32,
    alerting UInt8,
    flagged UInt32,
    queued UInt32,
    finished_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (project_id, window_key)"""

_FINDINGS = f"""
CREATE TABLE IF NOT EXISTS findings (
    project_id LowCardinality(String),
    window_key String,
    scope Map(LowCardinality(String), String),
    window_end DateTime64(9, 'UTC'),
    detector LowCardinality(String),
    statistic Float64,
    effect_size Float64,
    p_value Float64,
    rejected UInt8,
    details {_BODY}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (project_id, window_key, detector)"""

# Calls worth a human look, with why; one row per call however often it is flagged.
_REVIEW_QUEUE = """
CREATE TABLE IF NOT EXISTS review_queue (
    project_id LowCardinality(String),
    trace_id FixedString(32),
    span_id FixedString(16),
    call_time DateTime64(9, 'UTC'),
    scope Map(LowCardinality(String), String),
    reasons Array(LowCardinality(String)),
    scores Map(LowCardinality(String), Float64),
    priority Float64,
    source LowCardinality(String),
    window_key String,
    enqueued_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_time)
ORDER BY (project_id, trace_id, span_id)"""


# Alerts. States change, so each table is a ReplacingMergeTree on its id with a version column
# (`updated_at`); reads take the latest with FINAL. An alert's row key includes when it became
# active, so each activation keeps its own history.
_FLAG_COUNTS = (
    "ALTER TABLE detector_runs ADD COLUMN IF NOT EXISTS "
    "flag_counts Map(LowCardinality(String), UInt32) AFTER flagged"
)

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


# Review: reviewer judgements beyond a value (a correction, a pairwise choice, highlighted
# spans) keep their structure in `details`; one reviewer's submission shares a `review_id`.
_FEEDBACK_SHAPES = (
    "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS review_id String AFTER source, "
    "ADD COLUMN IF NOT EXISTS details String CODEC(ZSTD(3)) AFTER review_id"
)

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


# Why a queued call was flagged, in full: each reason's threshold and a note.
_QUEUE_DETAILS = (
    "ALTER TABLE review_queue ADD COLUMN IF NOT EXISTS thresholds "
    "Map(LowCardinality(String), Float64) AFTER scores, "
    "ADD COLUMN IF NOT EXISTS notes Map(LowCardinality(String), String) AFTER thresholds"
)

# A reviewer's own marks on a queued call: a saved draft, a skip, a submission.
_REVIEW_MARKS = """
CREATE TABLE IF NOT EXISTS review_marks (
    project_id LowCardinality(String),
    trace_id String,
    span_id String,
    reviewer String,
    status LowCardinality(String),
    body String CODEC(ZSTD(3)),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project_id, reviewer, trace_id, span_id)"""


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


# Dashboards: hourly aggregate states of the calls per project, service, version, model and
# agent, so a week of Overview reads ~170 rows per series instead of every call. The view adds
# each insert into llm_calls as it lands; llm_calls is write-once (the writer checks keys before
# it stores), so no call reaches the view twice. total_tokens is its own state because a provider's
# reported total may differ from input + output.
_HOURLY = """
CREATE TABLE IF NOT EXISTS llm_calls_hourly (
    project_id LowCardinality(String),
    hour DateTime('UTC'),
    service LowCardinality(String),
    service_version LowCardinality(String),
    model LowCardinality(String),
    agent LowCardinality(String),
    calls AggregateFunction(count),
    errors AggregateFunction(countIf, UInt8),
    input_tokens AggregateFunction(sum, UInt32),
    output_tokens AggregateFunction(sum, UInt32),
    total_tokens AggregateFunction(sum, UInt32),
    cost AggregateFunction(sum, Float64),
    duration AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, hour, service, model, agent, service_version)"""

_HOURLY_SELECT = """
SELECT project_id, toStartOfHour(start_time) AS hour, service, service_version,
    response_model AS model, agent_name AS agent, countState() AS calls,
    countIfState(toUInt8(status_code = 'error' OR error_type != '')) AS errors,
    sumState(input_tokens) AS input_tokens, sumState(output_tokens) AS output_tokens,
    sumState(total_tokens) AS total_tokens, sumState(cost_usd) AS cost,
    quantilesTDigestState(0.5, 0.95, 0.99)(duration_ms) AS duration
FROM llm_calls"""

_HOURLY_GROUP = "GROUP BY project_id, hour, service, service_version, model, agent"

_HOURLY_MV = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_hourly_mv TO llm_calls_hourly AS"
    f"{_HOURLY_SELECT}\n{_HOURLY_GROUP}"
)

# The calls stored before the view existed. Embedded, migrations run in the one process that owns
# the folder before it ingests anything, so no call is both seen by the view and read here. The
# backfill skips every hour the rollup already holds, so running it again (a start that died
# before recording the migration, a second server process) adds nothing twice. On a live server
# the hours the view wrote to before this ran stay as the view saw them (docs/deploy.md).
# GLOBAL: on a cluster both tables are Distributed, and a plain IN would run the subquery per shard.
_HOURLY_BACKFILL = (
    f"INSERT INTO llm_calls_hourly{_HOURLY_SELECT}\n"
    "WHERE toStartOfHour(start_time) GLOBAL NOT IN (SELECT DISTINCT hour FROM llm_calls_hourly)\n"
    f"{_HOURLY_GROUP}"
)


# Detection at volume. A call's vectors carry the scope columns and the few call fields the tests
# and flags read, so a window is one range read on (project_id, model, start_time). Vectors are
# int8 (each scaled by its largest component; readers normalise them again), 4x smaller than
# float32 with no measurable loss in the tests' power (bench/detect_scale.py).
_CALL_VECTORS = """
CREATE TABLE IF NOT EXISTS call_vectors (
    project_id LowCardinality(String),
    model LowCardinality(String),
    start_time DateTime64(9, 'UTC'),
    trace_id FixedString(32),
    span_id FixedString(16),
    service LowCardinality(String),
    service_version LowCardinality(String),
    response_model LowCardinality(String),
    agent_name LowCardinality(String),
    duration_ms Float64,
    output_tokens UInt32,
    cost_usd Float64,
    error_type LowCardinality(String),
    finish_reasons Array(LowCardinality(String)),
    prompt_vector Array(Int8),
    response_vector Array(Int8),
    embedded_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, model, start_time, trace_id, span_id)"""

# How far each embedding model has got: every call ingested before `ingested_upto`, and at it
# up to the cursor's key (all of it when the key is empty), is embedded, or under overload
# deliberately left out of the sample (`skipped` counts those per batch).
_EMBEDDING_WATERMARKS = """
CREATE TABLE IF NOT EXISTS embedding_watermarks (
    model LowCardinality(String),
    ingested_upto DateTime64(3, 'UTC'),
    cursor_project String,
    cursor_trace String,
    cursor_span String,
    embedded UInt64,
    skipped UInt64,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY model"""

# Embedded calls per service version, so new versions are found without reading the calls.
_VECTOR_VERSIONS = """
CREATE TABLE IF NOT EXISTS call_vector_versions (
    project_id LowCardinality(String),
    model LowCardinality(String),
    service LowCardinality(String),
    service_version LowCardinality(String),
    calls AggregateFunction(count),
    first_call AggregateFunction(min, DateTime64(9, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (project_id, model, service, service_version)"""

_VECTOR_VERSIONS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS call_vector_versions_mv TO call_vector_versions AS
SELECT project_id, model, service, service_version, countState() AS calls,
    minState(start_time) AS first_call
FROM call_vectors WHERE service_version != ''
GROUP BY project_id, model, service, service_version"""

# Pending calls are found by when they arrived: the index skips every granule ingested before
# the watermark, whatever the history.
_INGESTED_INDEX = (
    "ALTER TABLE llm_calls ADD INDEX IF NOT EXISTS idx_ingested ingested_at TYPE minmax "
    "GRANULARITY 1"
)
_INGESTED_INDEX_BUILD = "ALTER TABLE llm_calls MATERIALIZE INDEX idx_ingested"

# A reference's time span bounds every read of its calls.
_REFERENCE_SPAN = (
    "ALTER TABLE drift_references ADD COLUMN IF NOT EXISTS first_call DateTime64(9, 'UTC') "
    "AFTER calls, ADD COLUMN IF NOT EXISTS last_call DateTime64(9, 'UTC') AFTER first_call"
)

# References frozen before the span was recorded: found once, here, from their calls.
_REFERENCE_SPAN_BACKFILL = """INSERT INTO drift_references
    (project_id, name, version, scope, selector, calls, first_call, last_call, created_at)
SELECT r.project_id, r.name, r.version, r.scope, r.selector, r.calls, s.first, s.last,
    r.created_at
FROM (SELECT * FROM drift_references FINAL) AS r
INNER JOIN (
    SELECT m.project_id AS project_id, m.name AS name, m.version AS version,
        min(c.start_time) AS first, max(c.start_time) AS last
    FROM (SELECT project_id, name, version, trace_id, span_id FROM reference_calls) AS m
    INNER JOIN (SELECT project_id, trace_id, span_id, start_time FROM llm_calls) AS c
        ON c.project_id = m.project_id AND c.trace_id = m.trace_id AND c.span_id = m.span_id
    GROUP BY m.project_id, m.name, m.version
) AS s ON s.project_id = r.project_id AND s.name = r.name AND s.version = r.version
WHERE r.last_call = 0"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "calls, spans, projects and api keys", (_LLM_CALLS, _SPANS, _PROJECTS, _API_KEYS)),
    Migration(2, "feedback", (_FEEDBACK,)),
    Migration(
        3,
        "detectors: embeddings, references, runs, findings, review queue",
        (_CALL_EMBEDDINGS, _REFERENCES, _REFERENCE_CALLS, _DETECTOR_RUNS, _FINDINGS, _REVIEW_QUEUE),
    ),
    Migration(
        4,
        "alerts: states, groups, silences, outbox, retraining jobs; flag counts per window",
        (
            _FLAG_COUNTS,
            _ALERTS,
            _ALERT_GROUPS,
            _SILENCES,
            _NOTIFICATIONS,
            _NOTIFICATION_ATTEMPTS,
            _RETRAIN_JOBS,
        ),
    ),
    Migration(
        5,
        "review: feedback shapes, reviewers' marks, dataset snapshots",
        (_FEEDBACK_SHAPES, _QUEUE_DETAILS, _REVIEW_MARKS, _DATASET_SNAPSHOTS),
    ),
    Migration(
        6,
        "fine-tunes: runs, their curves, model versions",
        (_FINETUNE_RUNS, _FINETUNE_METRICS, _MODEL_VERSIONS),
    ),
    Migration(
        7,
        "hourly rollup of calls for dashboards",
        (_HOURLY, _HOURLY_MV, _HOURLY_BACKFILL),
    ),
    Migration(
        8,
        "detectors at volume: call vectors, embedding watermarks, versions, reference spans",
        (
            _CALL_VECTORS,
            _EMBEDDING_WATERMARKS,
            _VECTOR_VERSIONS,
            _VECTOR_VERSIONS_MV,
            _INGESTED_INDEX,
            _INGESTED_INDEX_BUILD,
            _REFERENCE_SPAN,
            _REFERENCE_SPAN_BACKFILL,
        ),
    ),
)

# Tables whose retention is configurable, and the column their TTL counts from.
RETENTION_COLUMNS = {"llm_calls": "start_time", "spans": "start_time", "feedback": "created_at"}


def migrate(store: Store) -> list[int]:
    """Apply every migration the database lacks, in order; return the versions applied."""
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
    )
    applied = {row["version"] for row in store.query("SELECT version FROM schema_migrations")}
    known = MIGRATIONS[-1].version
    if applied and max(applied) > known:
        raise StoreError(
            f"database schema is at version {max(applied)}, newer than this driftline knows "
            f"({known}); upgrade driftline instead of running an older one against it"
        )
    done = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            store.command(statement)
        store.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
            {"v": migration.version, "n": migration.name},
        )
        done.append(migration.version)
    return done


def schema_version(store: Store) -> int:
    rows = store.query("SELECT max(version) AS v FROM schema_migrations")
    return int(rows[0]["v"] or 0)


def apply_retention(store: Store, days_by_table: Mapping[str, int]) -> None:
    """Set each table's TTL to the configured days (0 keeps rows forever)."""
    for table, days in days_by_table.items():
        column = RETENTION_COLUMNS.get(table)
        if column is None:
            raise StoreError(
                f"retention set for unknown table {table!r}; known: {sorted(RETENTION_COLUMNS)}"
            )
        if days < 0:
            raise StoreError(f"retention for {table} must be >= 0 days, got {days}")
        current = _current_ttl_days(store, table)
        if current == days:
            continue
        if days == 0:
            store.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            store.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + toIntervalDay({days}) "
                "SETTINGS materialize_ttl_after_modify = 0"
            )


def _current_ttl_days(store: Store, table: str) -> int:
    rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": table},
    )
    if not rows:
        raise StoreError(f"table {table} does not exist; run migrations first")
    match = re.search(r"TTL .*toIntervalDay\((\d+)\)", rows[0]["engine_full"])
    return int(match.group(1)) if match else 0
