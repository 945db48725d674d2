"""The review room's tables: `feedback` and reviewers' marks (`review_marks`)."""

from __future__ import annotations

from driftline.store.migrations import Migration

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


# Review: reviewer judgements beyond a value (a correction, a pairwise choice, highlighted
# spans) keep their structure in `details`; one reviewer's submission shares a `review_id`.
_FEEDBACK_SHAPES = (
    "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS review_id String AFTER source, "
    "ADD COLUMN IF NOT EXISTS details String CODEC(ZSTD(3)) AFTER review_id"
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


MIGRATIONS = (
    Migration(2, "feedback", (_FEEDBACK,)),
    Migration(5, "feedback shapes, reviewers' marks", (_FEEDBACK_SHAPES, _REVIEW_MARKS)),
)

RETENTION = {"feedback": "created_at"}
