"""The review room's tables: `feedback` and reviewers' marks (`review_marks`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from driftline.store.base import Store
from driftline.store.migrations import Migration
from driftline.store.sql import Relation, Where

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


# -- reads other rooms make (they never name these tables) -------------------------------------


def new_feedback(
    store: Store, until_ns: int, names: Sequence[str], after_ns: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Per project, feedback stored by `until_ns` and after the project's `after_ns` moment
    (all of it for projects not named), of `names` (every name when empty): project_id, n and
    last_ms, when it last arrived."""
    # The moments as two arrays: element 0 (no such project) is 0, the epoch.
    after = "arrayElement({after:Array(Int64)}, indexOf({projects:Array(String)}, project_id))"
    where = Where(
        "ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC') "
        f"AND ingested_at > fromUnixTimestamp64Nano({after}, 'UTC')",
        until=until_ns, projects=list(after_ns), after=list(after_ns.values()),
    )  # fmt: skip
    if names:
        where.add("name IN {names:Array(String)}", names=list(names))
    return store.query(
        "SELECT project_id, count() AS n, toUnixTimestamp64Milli(max(ingested_at)) AS last_ms "
        f"FROM feedback FINAL WHERE {where} GROUP BY project_id",
        where.params,
    )


def feedback_until(store: Store, project: str, until_ns: int) -> tuple[int, int]:
    """How many feedback rows the project has stored by `until_ns`, and when the last arrived
    (Unix ms)."""
    rows = store.query(
        "SELECT count() AS n, toUnixTimestamp64Milli(max(ingested_at)) AS last_ms "
        "FROM feedback FINAL WHERE project_id = {p:String} "
        "AND ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')",
        {"p": project, "until": until_ns},
    )
    return int(rows[0]["n"]), int(rows[0]["last_ms"] or 0)


def feedback_rows(
    store: Store, project: str, until_ns: int, since_ns: int | None
) -> list[dict[str, Any]]:
    """The project's feedback stored by `until_ns` (and created since `since_ns`), oldest
    first: id, trace_id, span_id, name, kind, value_number, value_string, user_id, review_id,
    details."""
    where = Where("project_id = {project:String}", project=project)
    where.add("ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')", until=until_ns)
    where.between("created_at", since_ns, None)
    return store.query(
        "SELECT id, trace_id, span_id, name, kind, value_number, value_string, user_id, "
        f"review_id, details FROM feedback FINAL WHERE {where} ORDER BY created_at, id",
        where.params,
    )


def review_counts(project: str, reviewer: str) -> Relation:
    """Per reviewed call (trace_id, span_id): how many people reviewed it (`reviews`) and
    whether `reviewer` did (`mine`)."""
    return Relation(
        "SELECT trace_id, span_id, uniqExact(user_id) AS reviews, "
        "max(user_id = {reviews_me:String}) AS mine FROM feedback FINAL "
        "WHERE project_id = {reviews_p:String} AND source = 'review' GROUP BY trace_id, span_id",
        {"reviews_p": project, "reviews_me": reviewer},
    )
