"""The review room's tables: `feedback`, reviewers' marks (`review_marks`) and sign-ins
(`review_sessions`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from driftline.store.arrow import MS, table_of
from driftline.store.base import Store
from driftline.store.migrations import Migration
from driftline.store.sql import Relation, Where, bind, iso

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


# A reviewer's sign-in: the browser holds a random token, the store its SHA-256 and the key it
# stands for, so neither the cookie nor a leaked row is a key. Ended sessions are a newer row.
_REVIEW_SESSIONS = """
CREATE TABLE IF NOT EXISTS review_sessions (
    token_sha256 String,
    project_id LowCardinality(String),
    key_id String,
    expires_at DateTime64(3, 'UTC'),
    ended UInt8,
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY token_sha256
TTL toDateTime(expires_at) + INTERVAL 1 DAY"""


MIGRATIONS = (
    Migration(2, "feedback", (_FEEDBACK,)),
    Migration(5, "feedback shapes, reviewers' marks", (_FEEDBACK_SHAPES, _REVIEW_MARKS)),
    Migration(9, "reviewers' sessions", (_REVIEW_SESSIONS,)),
)

RETENTION = {"feedback": "created_at"}


# -- the rows this room inserts (store/arrow.py), and its own queries ----------------------------

FEEDBACK = pa.schema(
    [
        ("project_id", pa.string()),
        ("id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("value_number", pa.float64()),
        ("value_string", pa.string()),
        ("comment", pa.string()),
        ("user_id", pa.string()),
        ("source", pa.string()),
        ("review_id", pa.string()),
        ("details", pa.string()),
        ("created_at", MS),
    ]
)
REVIEW_MARKS = pa.schema(
    [
        ("project_id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("reviewer", pa.string()),
        ("status", pa.string()),
        ("body", pa.string()),
        ("updated_at", MS),
    ]
)
REVIEW_SESSIONS = pa.schema(
    [
        ("token_sha256", pa.string()),
        ("project_id", pa.string()),
        ("key_id", pa.string()),
        ("expires_at", MS),
        ("ended", pa.uint8()),
        ("updated_at", MS),
    ]
)
SCHEMAS = {"feedback": FEEDBACK, "review_marks": REVIEW_MARKS, "review_sessions": REVIEW_SESSIONS}


def insert_session(store: Store, columns: Mapping[str, Any]) -> None:
    store.insert_arrow("review_sessions", table_of(REVIEW_SESSIONS, columns))


def session_row(store: Store, token_sha256: str) -> dict[str, Any] | None:
    """A session's latest row: key_id, expires_ms, ended."""
    rows = store.query(
        "SELECT key_id, toUnixTimestamp64Milli(expires_at) AS expires_ms, ended "
        "FROM review_sessions FINAL WHERE token_sha256 = {t:String}",
        {"t": token_sha256},
    )
    return rows[0] if rows else None


def insert_feedback(store: Store, columns: Mapping[str, Any]) -> None:
    store.insert_arrow("feedback", table_of(FEEDBACK, columns))


def stored_ids(store: Store, project: str, ids: Sequence[str]) -> set[str]:
    """Those of `ids` the project's feedback already holds."""
    return {
        row["value"]
        for row in store.query_with_values(
            "SELECT id AS value FROM feedback WHERE project_id = {project:String} "
            "AND id IN (SELECT value FROM {values})",
            list(ids),
            {"project": project},
        )
    }


def sent_feedback(
    store: Store,
    project: str,
    trace_id: str | None,
    name: str | None,
    source: str | None,
    since_ns: int | None,
    until_ns: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Feedback rows newest first (`user` for user_id, `created_at` as RFC 3339)."""
    where = Where("project_id = {project:String}", project=project)
    where.equals("trace_id", trace_id).equals("name", name).equals("source", source)
    # `feedback.`: the column, not the RFC 3339 text selected under its name
    where.between("feedback.created_at", since_ns, until_ns)
    return store.query(
        "SELECT id, trace_id, span_id, name, kind, value_number, value_string, comment, "
        f"user_id AS user, source, review_id, details, {iso('created_at', 'created_at')} "
        f"FROM feedback FINAL WHERE {where} ORDER BY feedback.created_at DESC, id "
        "LIMIT {limit:UInt32}",
        bind(where, {"limit": limit}),
    )


def reviewer_scores(store: Store, project: str) -> list[dict[str, Any]]:
    """Reviewers' numeric and categorical judgements, oldest first: item (trace:span),
    user_id, review_id, name, kind, value_number, value_string."""
    return store.query(
        "SELECT concat(trace_id, ':', span_id) AS item, user_id, review_id, name, kind, "
        "value_number, value_string FROM feedback FINAL WHERE project_id = {p:String} "
        "AND source = 'review' AND kind IN ('numeric', 'categorical') ORDER BY created_at, id",
        {"p": project},
    )


def save_mark(
    store: Store, project: str, trace_id: str, span_id: str, reviewer: str, status: str, body: str
) -> None:
    """A reviewer's draft, skip or submission of a call; the latest one counts."""
    store.insert_arrow(
        "review_marks",
        table_of(
            REVIEW_MARKS,
            {
                "project_id": [project],
                "trace_id": [trace_id],
                "span_id": [span_id],
                "reviewer": [reviewer],
                "status": [status],
                "body": [body],
                "updated_at": [time.time_ns() // 1_000_000],
            },
        ),
    )


def draft_body(store: Store, project: str, reviewer: str, trace_id: str, span_id: str) -> str:
    """The reviewer's saved draft of a call (JSON), or ""."""
    rows = store.query(
        "SELECT body FROM review_marks FINAL WHERE project_id = {p:String} "
        "AND reviewer = {me:String} AND trace_id = {t:String} AND span_id = {s:String} "
        "AND status = 'draft'",
        {"p": project, "me": reviewer, "t": trace_id, "s": span_id},
    )
    return str(rows[0]["body"]) if rows else ""


def marks(project: str, reviewer: str) -> Relation:
    """Per call (trace_id, span_id), the reviewer's latest mark (`mark`)."""
    return Relation(
        "SELECT trace_id, span_id, status AS mark FROM review_marks FINAL "
        "WHERE project_id = {marks_p:String} AND reviewer = {marks_me:String}",
        {"marks_p": project, "marks_me": reviewer},
    )


# -- reads other rooms make (they never name these tables) -------------------------------------


def new_feedback(
    store: Store,
    until_ns: int,
    names: Sequence[str],
    after_ns: Mapping[str, int],
    sources: Sequence[str],
) -> list[dict[str, Any]]:
    """Per project, feedback from `sources` stored by `until_ns` and after the project's
    `after_ns` moment (all of it for projects not named), of `names` (every name when empty):
    project_id, n and last_ns, when it last arrived."""
    # The moments as two arrays: element 0 (no such project) is 0, the epoch.
    after = "arrayElement({after:Array(Int64)}, indexOf({projects:Array(String)}, project_id))"
    where = Where(
        "ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC') "
        f"AND ingested_at > fromUnixTimestamp64Nano({after}, 'UTC')",
        until=until_ns, projects=list(after_ns), after=list(after_ns.values()),
    )  # fmt: skip
    where.add("source IN {sources:Array(String)}", sources=list(sources))
    if names:
        where.add("name IN {names:Array(String)}", names=list(names))
    return store.query(
        "SELECT project_id, count() AS n, toUnixTimestamp64Nano(max(ingested_at)) AS last_ns "
        f"FROM feedback FINAL WHERE {where} GROUP BY project_id",
        where.params,
    )


def feedback_until(
    store: Store, project: str, until_ns: int, sources: Sequence[str]
) -> tuple[int, int]:
    """How many feedback rows from `sources` the project has stored by `until_ns`, and when the
    last arrived."""
    rows = store.query(
        "SELECT count() AS n, toUnixTimestamp64Nano(max(ingested_at)) AS last_ns "
        "FROM feedback FINAL WHERE project_id = {p:String} "
        "AND ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC') "
        "AND source IN {sources:Array(String)}",
        {"p": project, "until": until_ns, "sources": list(sources)},
    )
    return int(rows[0]["n"]), int(rows[0]["last_ns"] or 0)


def feedback_rows(
    store: Store, project: str, until_ns: int, since_ns: int | None
) -> list[dict[str, Any]]:
    """The project's feedback stored by `until_ns` (and created since `since_ns`), oldest
    first: id, trace_id, span_id, name, kind, value_number, value_string, user_id, source,
    review_id, details."""
    where = Where("project_id = {project:String}", project=project)
    where.add("ingested_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')", until=until_ns)
    where.between("created_at", since_ns, None)
    return store.query(
        "SELECT id, trace_id, span_id, name, kind, value_number, value_string, user_id, source, "
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


def judged_and_reviewed(
    store: Store, project: str, judge_user: str, since_ns: int
) -> list[dict[str, Any]]:
    """Each (call, criterion) that the judge `judge_user` scored and reviewers scored too since
    `since_ns`: the judge's latest score, the reviewers' mean (each reviewer's latest), and how
    many reviewers."""
    since = "fromUnixTimestamp64Nano({since:Int64}, 'UTC')"
    return store.query(
        "SELECT j.trace_id AS trace_id, j.span_id AS span_id, j.name AS name, j.score AS judge, "
        "r.people AS people, r.reviewers AS reviewers FROM ("
        "  SELECT trace_id, span_id, name, argMax(value_number, created_at) AS score "
        "  FROM feedback FINAL WHERE project_id = {p:String} AND source = 'judge' "
        f"  AND user_id = {{u:String}} AND created_at >= {since} AND value_number IS NOT NULL "
        "  GROUP BY trace_id, span_id, name) AS j "
        "INNER JOIN ("
        "  SELECT trace_id, span_id, name, avg(latest) AS people, count() AS reviewers FROM ("
        "    SELECT trace_id, span_id, name, user_id, argMax(value_number, created_at) AS latest "
        "    FROM feedback FINAL WHERE project_id = {p:String} AND source = 'review' "
        f"    AND created_at >= {since} AND value_number IS NOT NULL "
        "    GROUP BY trace_id, span_id, name, user_id) "
        "  GROUP BY trace_id, span_id, name) AS r "
        "ON j.trace_id = r.trace_id AND j.span_id = r.span_id AND j.name = r.name "
        "ORDER BY name, trace_id, span_id",
        {"p": project, "u": judge_user, "since": since_ns},
    )


def judge_users(store: Store, prefix: str, since_ns: int) -> list[dict[str, Any]]:
    """(project_id, user_id) of every judge whose user starts with `prefix` that stored scores
    since `since_ns`."""
    return store.query(
        "SELECT DISTINCT project_id, user_id FROM feedback WHERE source = 'judge' "
        "AND startsWith(user_id, {prefix:String}) "
        "AND created_at >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "ORDER BY project_id, user_id",
        {"prefix": prefix, "since": since_ns},
    )


def score_stats(
    store: Store,
    project: str,
    traces: Relation,
    source: str,
    users: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per experiment, version and feedback name: the numeric feedback from `source` (only
    these `users`, these `names` when given) on the calls of `traces` (trace_id, experiment,
    version): count, mean, variance."""
    if users is not None and not users:
        return []
    where = Where()
    where.add("f.project_id = {fb_p:String}", fb_p=project)
    where.add("f.source = {fb_source:String}", fb_source=source)
    where.add("f.value_number IS NOT NULL")
    if users is not None:
        where.add("f.user_id IN {fb_users:Array(String)}", fb_users=list(users))
    if names is not None:
        where.add("f.name IN {fb_names:Array(String)}", fb_names=list(names))
    return store.query(
        "SELECT t.experiment AS experiment, t.version AS version, f.name AS name, "
        "count() AS n, avg(f.value_number) AS mean, varSamp(f.value_number) AS var "
        f"FROM feedback AS f FINAL INNER JOIN {traces} AS t ON f.trace_id = t.trace_id "
        f"WHERE {where} GROUP BY experiment, version, name ORDER BY experiment, version, name",
        bind(traces, where),
    )


def pairwise_choices(
    store: Store, project: str, traces: Relation, sources: Sequence[str]
) -> list[dict[str, Any]]:
    """Per experiment: the choices (`a`, `b` or `tie`, from `sources`) between two answers of
    different versions of it (their traces in `traces`: trace_id, experiment, version), with
    the version of each answer and how many times each was made. A user choosing again between
    the same two answers counts once, with the latest choice."""
    side = "JSONExtractString(details, '{0}', '{1}')"
    return store.query(
        "SELECT ta.experiment AS experiment, ta.version AS version_a, tb.version AS version_b, "
        "f.choice AS choice, count() AS n FROM ("
        f"  SELECT {side.format('a', 'trace_id')} AS a_trace, "
        f"    {side.format('b', 'trace_id')} AS b_trace, "
        "    argMax(value_string, created_at) AS choice FROM feedback FINAL "
        "  WHERE project_id = {pw_p:String} AND kind = 'pairwise' "
        "  AND source IN {pw_sources:Array(String)} "
        f"  GROUP BY a_trace, {side.format('a', 'span_id')}, b_trace, "
        f"    {side.format('b', 'span_id')}, user_id) AS f "
        f"INNER JOIN {traces} AS ta ON f.a_trace = ta.trace_id "
        f"INNER JOIN {traces} AS tb ON f.b_trace = tb.trace_id "
        "WHERE ta.experiment = tb.experiment AND ta.version != tb.version "
        "GROUP BY experiment, version_a, version_b, choice "
        "ORDER BY experiment, version_a, version_b, choice",
        bind(traces, {"pw_p": project, "pw_sources": list(sources)}),
    )
