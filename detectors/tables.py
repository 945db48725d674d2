"""The detectors' tables: embeddings, references, runs, findings and the review queue."""

from __future__ import annotations

from driftline.store.migrations import BODY, Migration

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
    details {BODY}
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


# Why a queued call was flagged, in full: each reason's threshold and a note.
_QUEUE_DETAILS = (
    "ALTER TABLE review_queue ADD COLUMN IF NOT EXISTS thresholds "
    "Map(LowCardinality(String), Float64) AFTER scores, "
    "ADD COLUMN IF NOT EXISTS notes Map(LowCardinality(String), String) AFTER thresholds"
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


MIGRATIONS = (
    Migration(
        3,
        "embeddings, references, runs, findings, review queue",
        (_CALL_EMBEDDINGS, _REFERENCES, _REFERENCE_CALLS, _DETECTOR_RUNS, _FINDINGS, _REVIEW_QUEUE),
    ),
    Migration(4, "flag counts per window", (_FLAG_COUNTS,)),
    Migration(5, "review queue details", (_QUEUE_DETAILS,)),
    Migration(
        8,
        "call vectors, embedding watermarks, versions, reference spans",
        (
            _CALL_VECTORS,
            _EMBEDDING_WATERMARKS,
            _VECTOR_VERSIONS,
            _VECTOR_VERSIONS_MV,
            _REFERENCE_SPAN,
            _REFERENCE_SPAN_BACKFILL,
        ),
    ),
)
