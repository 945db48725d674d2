"""The detectors' tables: embeddings, references, runs, findings and the review queue."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from driftline.ingest.tables import review_texts
from driftline.store.arrow import MS, NS, table_of, text_map
from driftline.store.base import Store
from driftline.store.migrations import BODY, Migration
from driftline.store.sql import Relation, Where, bind, iso

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


# Every call a detector flagged, with why, whatever the review budget let into the queue: what
# the live A/B's flag rates count (evaluators/experiments.py). Kept as long as an experiment
# looks back at most.
_CALL_FLAGS = """
CREATE TABLE IF NOT EXISTS call_flags (
    project_id LowCardinality(String),
    trace_id FixedString(32),
    span_id FixedString(16),
    call_time DateTime64(9, 'UTC'),
    reasons Array(LowCardinality(String)),
    window_key String,
    flagged_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_time)
ORDER BY (project_id, trace_id, span_id)
TTL toDateTime(call_time) + INTERVAL 90 DAY"""


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
    Migration(14, "every flagged call, past the review budget", (_CALL_FLAGS,)),
)


# -- the rows this room inserts (store/arrow.py) ------------------------------------------------

CALL_VECTORS = pa.schema(
    [
        ("project_id", pa.string()),
        ("model", pa.string()),
        ("start_time", NS),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("service", pa.string()),
        ("service_version", pa.string()),
        ("response_model", pa.string()),
        ("agent_name", pa.string()),
        ("duration_ms", pa.float64()),
        ("output_tokens", pa.uint32()),
        ("cost_usd", pa.float64()),
        ("error_type", pa.string()),
        ("finish_reasons", pa.list_(pa.string())),
        ("prompt_vector", pa.list_(pa.int8())),
        ("response_vector", pa.list_(pa.int8())),
    ]
)
EMBEDDING_WATERMARKS = pa.schema(
    [
        ("model", pa.string()),
        ("ingested_upto", MS),
        ("cursor_project", pa.string()),
        ("cursor_trace", pa.string()),
        ("cursor_span", pa.string()),
        ("embedded", pa.uint64()),
        ("skipped", pa.uint64()),
    ]
)
REFERENCE_CALLS = pa.schema(
    [
        ("project_id", pa.string()),
        ("name", pa.string()),
        ("version", pa.uint32()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
    ]
)
DRIFT_REFERENCES = pa.schema(
    [
        ("project_id", pa.string()),
        ("name", pa.string()),
        ("version", pa.uint32()),
        ("scope", text_map()),
        ("selector", pa.string()),
        ("calls", pa.uint32()),
        ("first_call", NS),
        ("last_call", NS),
    ]
)
REVIEW_QUEUE = pa.schema(
    [
        ("project_id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("call_time", NS),
        ("scope", text_map()),
        ("reasons", pa.list_(pa.string())),
        ("scores", text_map(pa.float64())),
        ("thresholds", text_map(pa.float64())),
        ("notes", text_map()),
        ("priority", pa.float64()),
        ("source", pa.string()),
        ("window_key", pa.string()),
    ]
)
CALL_FLAGS = pa.schema(
    [
        ("project_id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("call_time", NS),
        ("reasons", pa.list_(pa.string())),
        ("window_key", pa.string()),
    ]
)
FINDINGS = pa.schema(
    [
        ("project_id", pa.string()),
        ("window_key", pa.string()),
        ("scope", text_map()),
        ("window_end", NS),
        ("detector", pa.string()),
        ("statistic", pa.float64()),
        ("effect_size", pa.float64()),
        ("p_value", pa.float64()),
        ("rejected", pa.uint8()),
        ("details", pa.string()),
    ]
)
DETECTOR_RUNS = pa.schema(
    [
        ("project_id", pa.string()),
        ("window_key", pa.string()),
        ("scope", text_map()),
        ("reference", pa.string()),
        ("reference_version", pa.uint32()),
        ("window_start", NS),
        ("window_end", NS),
        ("n_reference", pa.uint32()),
        ("n_current", pa.uint32()),
        ("drifting", pa.uint8()),
        ("consecutive", pa.uint32()),
        ("alerting", pa.uint8()),
        ("flagged", pa.uint32()),
        ("flag_counts", text_map(pa.uint32())),
        ("queued", pa.uint32()),
    ]
)
SCHEMAS = {
    "call_vectors": CALL_VECTORS,
    "embedding_watermarks": EMBEDDING_WATERMARKS,
    "reference_calls": REFERENCE_CALLS,
    "drift_references": DRIFT_REFERENCES,
    "review_queue": REVIEW_QUEUE,
    "call_flags": CALL_FLAGS,
    "findings": FINDINGS,
    "detector_runs": DETECTOR_RUNS,
}


# -- the room's own reads and writes ---------------------------------------------------------


def watermark(store: Store, model: str) -> dict[str, Any] | None:
    """The embedding model's cursor: ms (ingested_upto), cursor_project/trace/span."""
    rows = store.query(
        "SELECT toUnixTimestamp64Milli(ingested_upto) AS ms, cursor_project, cursor_trace, "
        "cursor_span FROM embedding_watermarks FINAL WHERE model = {m:String}",
        {"m": model},
    )
    return rows[0] if rows else None


def embedded_keys(
    store: Store, model: str, projects: Sequence[str], first_ns: int, last_ns: int,
    keys: Sequence[str],
) -> set[str]:  # fmt: skip
    """Those of `keys` (trace_id + span_id) that `model` has vectors for, among calls of
    `projects` that started within [first_ns, last_ns]."""
    return {
        row["k"]
        for row in store.query(
            "SELECT concat(trace_id, span_id) AS k FROM call_vectors "
            "WHERE project_id IN {projects:Array(String)} AND model = {m:String} "
            "AND start_time >= fromUnixTimestamp64Nano({first:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({last:Int64}, 'UTC') "
            "AND concat(trace_id, span_id) IN {keys:Array(String)}",
            {
                "m": model,
                "projects": list(projects),
                "first": first_ns,
                "last": last_ns,
                "keys": list(keys),
            },
        )
    }


def vectors(
    store: Store,
    project: str,
    model: str,
    columns: str,
    where: str,
    params: Mapping[str, Any],
    order: str,
    limit: int | None,
) -> pa.Table:
    """`columns` of the project's calls embedded by `model` (alias `c`) that `where` selects;
    `where` must bound `c.start_time`."""
    return store.query_arrow(
        f"SELECT {columns} FROM call_vectors AS c FINAL "
        "WHERE c.project_id = {project:String} AND c.model = {model:String} "
        f"AND {where} ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit else ""),
        {**params, "project": project, "model": model},
    )


def versions_with_calls(store: Store, model: str, calls: int) -> list[dict[str, Any]]:
    """Service versions with at least `calls` calls embedded by `model`, by the rollup (never
    the calls): project, service, version, first_ns."""
    return store.query(
        "SELECT project_id AS project, service, service_version AS version, "
        "toUnixTimestamp64Nano(minMerge(first_call)) AS first_ns "
        "FROM call_vector_versions WHERE model = {model:String} "
        "GROUP BY project_id, service, service_version "
        "HAVING countMerge(calls) >= {calls:UInt64} ORDER BY project, first_ns",
        {"model": model, "calls": calls},
    )


_SPAN = "toUnixTimestamp64Nano(first_call) AS first_ns, toUnixTimestamp64Nano(last_call) AS last_ns"


def reference_row(
    store: Store, project: str, name: str, version: int | None
) -> dict[str, Any] | None:
    """A reference at `version` (its latest when None)."""
    rows = store.query(
        "SELECT name, version, scope, selector, calls, toString(created_at) AS created_at, "
        f"{_SPAN} "
        "FROM drift_references FINAL WHERE project_id = {p:String} AND name = {n:String} "
        + ("AND version = {v:UInt32} " if version is not None else "")
        + "ORDER BY version DESC LIMIT 1",
        {"p": project, "n": name, "v": version or 0},
    )
    return rows[0] if rows else None


def latest_references(store: Store, project: str | None) -> list[dict[str, Any]]:
    """The latest version of every reference (of one project, or of all), by project and name."""
    rows = store.query(
        "SELECT project_id, name, max(r.version) AS latest, argMax(r.scope, r.version) AS scope, "
        "argMax(r.selector, r.version) AS selector, argMax(r.calls, r.version) AS calls, "
        "toString(argMax(r.created_at, r.version)) AS created_at, "
        "toUnixTimestamp64Nano(argMax(r.first_call, r.version)) AS first_ns, "
        "toUnixTimestamp64Nano(argMax(r.last_call, r.version)) AS last_ns "
        "FROM drift_references AS r FINAL "
        + ("WHERE project_id = {p:String} " if project else "")
        + "GROUP BY project_id, name ORDER BY project_id, name",
        {"p": project or ""},
    )
    for row in rows:
        row["version"] = row.pop("latest")
    return rows


def last_reference_version(store: Store, project: str, name: str) -> int:
    rows = store.query(
        "SELECT max(version) AS v FROM drift_references WHERE project_id = {p:String} "
        "AND name = {n:String}",
        {"p": project, "n": name},
    )
    return int(rows[0]["v"] or 0)


def members_condition(
    project: str, name: str, version: int, first_ns: int, last_ns: int, limit: int,
    params: dict[str, Any],
) -> str:  # fmt: skip
    """SQL on `c` (llm_calls or call_vectors) for up to `limit` of a reference's calls (a
    seeded uniform sample when it has more), bounded by its time span; fills `params`."""
    params.update(
        ref_project=project, ref_name=name, ref_version=version, ref_first=first_ns,
        ref_last=last_ns, ref_limit=limit,
    )  # fmt: skip
    return (
        "c.start_time >= fromUnixTimestamp64Nano({ref_first:Int64}, 'UTC') "
        "AND c.start_time <= fromUnixTimestamp64Nano({ref_last:Int64}, 'UTC') "
        "AND (c.trace_id, c.span_id) IN (SELECT trace_id, span_id FROM reference_calls "
        "WHERE project_id = {ref_project:String} AND name = {ref_name:String} "
        "AND version = {ref_version:UInt32} "
        "ORDER BY cityHash64(trace_id, span_id) LIMIT {ref_limit:UInt32})"
    )


def last_window(
    store: Store, project: str, reference: str, version: int, since_ns: int
) -> tuple[int, int]:
    """The end (ns, 0 when none) and drifting streak of a reference version's last window
    that ended since `since_ns`."""
    rows = store.query(
        "SELECT toUnixTimestamp64Nano(max(window_end)) AS ns, "
        "argMax(consecutive, window_end) AS c FROM detector_runs FINAL "
        "WHERE project_id = {p:String} AND reference = {r:String} "
        "AND reference_version = {v:UInt32} "
        "AND window_end >= fromUnixTimestamp64Nano({first:Int64}, 'UTC')",
        {"p": project, "r": reference, "v": version, "first": since_ns},
    )
    return int(rows[0]["ns"] or 0), int(rows[0]["c"] or 0)


def flagged_today(store: Store, project: str, day: str, since_ns: int) -> int:
    """Calls queued as flagged on `day` (ISO date) among calls that started since `since_ns`."""
    rows = store.query(
        "SELECT count() AS n FROM review_queue FINAL WHERE project_id = {p:String} "
        "AND call_time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND source = 'flag' AND toDate(enqueued_at) = toDate({d:String})",
        {"p": project, "d": day, "since": since_ns},
    )
    return int(rows[0]["n"])


def nearest_responses(store: Store, members: str, texts: Relation, k: int) -> list[dict[str, Any]]:
    """The `k` calls that `members` selects (a condition on `c`) whose response vectors are
    closest to the call `texts.params` names (p, t, s and its instant `call` in ns): rows of
    input_text, output_text (from `texts`, by trace_id and span_id) and similarity."""
    # Both sides read within their own time spans: the call's instant and the reference's.
    return store.query(
        "WITH (SELECT any(response_vector) FROM call_vectors WHERE project_id = {p:String} "
        "AND start_time >= fromUnixTimestamp64Nano({call:Int64}, 'UTC') "
        "AND start_time < fromUnixTimestamp64Nano({call:Int64} + 1000000, 'UTC') "
        "AND trace_id = {t:String} AND span_id = {s:String}) AS mine "
        "SELECT t.input_text AS input_text, t.output_text AS output_text, "
        "1 - cosineDistance(c.response_vector, mine) AS similarity FROM call_vectors AS c "
        f"JOIN {texts} AS t ON t.trace_id = c.trace_id AND t.span_id = c.span_id "
        f"WHERE c.project_id = {{p:String}} AND length(mine) > 0 AND {members} "
        "ORDER BY similarity DESC LIMIT {k:UInt32}",
        bind(texts, {"k": k}),
    )


def insert(store: Store, table: str, columns: Mapping[str, Any]) -> None:
    """Rows into one of this room's tables, shaped by its schema."""
    store.insert_arrow(table, table_of(SCHEMAS[table], columns))


# -- reads other rooms make (they never name these tables) -------------------------------------


def latest_windows(store: Store, until_ns: int, reference: str | None) -> list[dict[str, Any]]:
    """Per project and reference (or just `reference`), its last window ended by `until_ns`:
    project_id, reference, version, scope, consecutive (drifting windows in a row), window_key."""
    where = Where("window_end <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')", until=until_ns)
    where.equals("reference", reference)
    return store.query(
        "SELECT project_id, reference, argMax(reference_version, window_end) AS version, "
        "argMax(scope, window_end) AS scope, argMax(consecutive, window_end) AS consecutive, "
        "argMax(window_key, window_end) AS window_key "
        f"FROM detector_runs FINAL WHERE {where} GROUP BY project_id, reference",
        where.params,
    )


def window_tests(store: Store, project: str, window_key: str) -> list[dict[str, Any]]:
    """Each test of one window: detector, statistic, p_value, rejected (a bool)."""
    rows = store.query(
        "SELECT detector, statistic, p_value, rejected FROM findings FINAL "
        "WHERE project_id = {p:String} AND window_key = {k:String} ORDER BY detector",
        {"p": project, "k": window_key},
    )
    return [{**row, "rejected": bool(row["rejected"])} for row in rows]


def flag_totals(
    store: Store, since_ns: int, until_ns: int, reason: str, reference: str | None
) -> list[dict[str, Any]]:
    """Per project and reference, over the windows ended in (since, until]: the last scope,
    calls tested, calls flagged for `reason`, and the windows' keys."""
    where = Where(
        "window_end > fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND window_end <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')",
        since=since_ns, until=until_ns,
    ).equals("reference", reference)  # fmt: skip
    return store.query(
        "SELECT project_id, reference, argMax(scope, window_end) AS scope, "
        "sum(n_current) AS calls, sum(flag_counts[{reason:String}]) AS flagged, "
        "groupArray(window_key) AS windows "
        f"FROM detector_runs FINAL WHERE {where} GROUP BY project_id, reference",
        bind(where, {"reason": reason}),
    )


def window_effects(store: Store, project: str, days: int) -> list[dict[str, Any]]:
    """The last `days` of windows: reference, test (reference and detector), t (window end,
    Unix seconds), p and effect, oldest first."""
    return store.query(
        "SELECT r.reference AS reference, concat(r.reference, ' ', f.detector) AS test, "
        "toUnixTimestamp(r.window_end) AS t, f.p_value AS p, f.effect_size AS effect "
        "FROM detector_runs AS r FINAL JOIN (SELECT window_key, detector, p_value, effect_size "
        "FROM findings FINAL WHERE project_id = {p:String}) AS f ON f.window_key = r.window_key "
        "WHERE r.project_id = {p:String} AND r.window_end > now() - toIntervalDay({days:UInt32}) "
        "ORDER BY t",
        {"p": project, "days": days},
    )


def flag_rates(store: Store, project: str, days: int) -> list[dict[str, Any]]:
    """The last `days` of windows: reference, t (Unix seconds) and the share of calls flagged."""
    return store.query(
        "SELECT reference, toUnixTimestamp(window_end) AS t, flagged / n_current AS rate "
        "FROM detector_runs FINAL WHERE project_id = {p:String} AND n_current > 0 "
        "AND window_end > now() - toIntervalDay({days:UInt32}) ORDER BY t",
        {"p": project, "days": days},
    )


QUEUE_COLUMNS = (
    "trace_id, span_id, call_time, reasons, scores, thresholds, notes, priority, source, "
    "window_key, scope, enqueued_at"
)


def queued(project: str) -> Relation:
    """The project's review queue: one row per flagged call, with QUEUE_COLUMNS."""
    return Relation(
        f"SELECT {QUEUE_COLUMNS} FROM review_queue FINAL WHERE project_id = {{queue_p:String}}",
        {"queue_p": project},
    )


def queued_keys(project: str) -> Relation:
    """trace_id and span_id of the project's queued calls."""
    return Relation(
        "SELECT trace_id, span_id FROM review_queue WHERE project_id = {queue_p:String}",
        {"queue_p": project},
    )


def queue_calls(
    store: Store, project: str, calls: Sequence[Mapping[str, Any]], reason: str, window_key: str
) -> int:
    """Queue `calls` (trace_id, span_id, start_ns) for review for `reason` (also their source);
    a call already queued keeps its row and its reasons. How many were queued."""
    if not calls:
        return 0
    keys = [c["trace_id"] + c["span_id"] for c in calls]
    held = {
        row["k"]
        for row in store.query(
            "SELECT concat(trace_id, span_id) AS k FROM review_queue WHERE project_id = {p:String} "
            "AND concat(trace_id, span_id) IN {keys:Array(String)}",
            {"p": project, "keys": keys},
        )
    }
    fresh = [c for c, k in zip(calls, keys, strict=True) if k not in held]
    if not fresh:
        return 0
    n = len(fresh)
    insert(store, "review_queue", {
        "project_id": [project] * n,
        "trace_id": [c["trace_id"] for c in fresh],
        "span_id": [c["span_id"] for c in fresh],
        "call_time": [c["start_ns"] for c in fresh],
        "scope": [[("service", c.get("service", ""))] for c in fresh],
        "reasons": [[reason]] * n,
        "scores": [[]] * n,
        "thresholds": [[]] * n,
        "notes": [[]] * n,
        "priority": [0.0] * n,
        "source": [reason] * n,
        "window_key": [window_key] * n,
    })  # fmt: skip
    return n


def is_queued(store: Store, project: str, trace_id: str, span_id: str) -> bool:
    rows = store.query(
        "SELECT count() AS n FROM review_queue WHERE project_id = {p:String} "
        "AND trace_id = {t:String} AND span_id = {s:String}",
        {"p": project, "t": trace_id, "s": span_id},
    )
    return bool(rows[0]["n"])


def queued_in_trace(store: Store, project: str, trace_id: str) -> dict[str, dict[str, Any]]:
    """span id → the queue's row for each of the trace's queued calls: reasons, scores,
    thresholds, notes, priority, source, window_key."""
    rows = store.query(
        "SELECT toString(span_id) AS span_id, reasons, scores, thresholds, notes, priority, "
        "source, window_key FROM review_queue FINAL WHERE project_id = {p:String} "
        "AND trace_id = {t:String}",
        {"p": project, "t": trace_id},
    )
    for row in rows:
        for name in ("scores", "thresholds", "notes"):
            row[name] = dict(row[name])
    return {row.pop("span_id"): row for row in rows}


def queue_size(store: Store, project: str) -> int:
    rows = store.query(
        "SELECT count() AS n FROM review_queue FINAL WHERE project_id = {p:String}",
        {"p": project},
    )
    return int(rows[0]["n"])


# Not a prefix of the window key: `chat@1.0`'s keys (`chat@1.0@1/...`) start with `chat@` too.
_REFERENCE_WINDOWS = (
    "SELECT window_key FROM detector_runs WHERE project_id = {p:String} "
    "AND reference = {ref:String}"
)


def drift_windows(
    store: Store,
    project: str,
    reference: str | None,
    since_ns: int | None,
    until_ns: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The latest `limit` windows that ended in [since, until), oldest first, each with its
    `tests` (by detector)."""
    where = Where("r.project_id = {p:String}", p=project).equals("r.reference", reference)
    where.between("r.window_end", since_ns, until_ns)
    runs = store.query(
        "SELECT r.window_key AS window_key, r.reference AS reference, "
        "r.reference_version AS reference_version, r.scope AS scope, "
        f"{iso('r.window_start', 'window_start')}, {iso('r.window_end', 'window_end')}, "
        "r.n_reference AS n_reference, r.n_current AS n_current, r.drifting AS drifting, "
        "r.consecutive AS consecutive, r.alerting AS alerting, r.flagged AS flagged, "
        "r.flag_counts AS flag_counts, r.queued AS queued "
        f"FROM detector_runs AS r FINAL WHERE {where} ORDER BY r.window_end DESC "
        "LIMIT {limit:UInt32}",
        bind(where, {"limit": limit}),
    )
    tests: dict[str, list[dict[str, Any]]] = {run["window_key"]: [] for run in runs}
    if runs:
        for row in store.query(
            "SELECT window_key, detector, statistic, effect_size, p_value, rejected "
            "FROM findings FINAL WHERE project_id = {p:String} AND window_key IN {k:Array(String)}",
            {"p": project, "k": list(tests)},
        ):
            tests[row.pop("window_key")].append({**row, "rejected": bool(row["rejected"])})
    for run in runs:
        run["scope"] = dict(run["scope"])
        run["flag_counts"] = dict(run["flag_counts"])
        for flag in ("drifting", "alerting"):
            run[flag] = bool(run[flag])
        run["tests"] = sorted(tests[run["window_key"]], key=lambda t: t["detector"])
    return runs[::-1]


def findings(
    store: Store,
    project: str,
    reference: str | None,
    detector: str | None,
    rejected: bool | None,
    since_ns: int | None,
    until_ns: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Each test's result per window that ended in [since, until), newest first."""
    where = Where("f.project_id = {p:String}", p=project)
    where.between("f.window_end", since_ns, until_ns)
    if reference:
        where.add(f"f.window_key IN ({_REFERENCE_WINDOWS})", ref=reference)
    where.equals("f.detector", detector)
    if rejected is not None:
        where.add("f.rejected = {rejected:UInt8}", rejected=int(rejected))
    rows = store.query(
        "SELECT f.window_key AS window_key, f.scope AS scope, "
        f"{iso('f.window_end', 'window_end')}, f.detector AS detector, "
        "f.statistic AS statistic, f.effect_size AS effect_size, f.p_value AS p_value, "
        "f.rejected AS rejected, f.details AS details "
        f"FROM findings AS f FINAL WHERE {where} ORDER BY f.window_end DESC, f.detector "
        "LIMIT {limit:UInt32}",
        bind(where, {"limit": limit}),
    )
    for row in rows:
        row["scope"] = dict(row["scope"])
        row["rejected"] = bool(row["rejected"])
        row["details"] = json.loads(row["details"]) if row["details"] else {}
    return rows


def queue_items(
    store: Store,
    project: str,
    reason: str | None,
    source: str | None,
    reference: str | None,
    window_key: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Queued calls with their texts, highest priority first."""
    where = Where("q.project_id = {p:String}", p=project)
    if reason:
        where.add("has(q.reasons, {reason:String})", reason=reason)
    where.equals("q.source", source)
    if reference:
        where.add(f"q.window_key IN ({_REFERENCE_WINDOWS})", ref=reference)
    where.equals("q.window_key", window_key, name="window")
    calls = review_texts(project, queued_keys(project))
    rows = store.query(
        "SELECT q.trace_id AS trace_id, q.span_id AS span_id, "
        f"{iso('q.call_time', 'call_time')}, q.reasons AS reasons, "
        "q.scores AS scores, q.thresholds AS thresholds, q.notes AS notes, "
        "q.priority AS priority, q.source AS source, "
        "q.window_key AS window_key, c.input_text AS input_text, c.output_text AS output_text, "
        "c.model AS model, c.service AS service "
        f"FROM review_queue AS q FINAL LEFT JOIN {calls} AS c "
        "ON q.trace_id = c.trace_id AND q.span_id = c.span_id "
        f"WHERE {where} ORDER BY q.priority DESC, q.call_time DESC LIMIT {{limit:UInt32}}",
        bind(where, calls, {"limit": limit}),
    )
    for row in rows:
        for name in ("scores", "thresholds", "notes"):
            row[name] = dict(row[name])
    return rows


def flag_counts(
    store: Store, project: str, traces: Relation, since_ns: int
) -> list[dict[str, Any]]:
    """Per experiment, version and reason: the calls of `traces` (trace_id, experiment,
    version) since `since_ns` that a detector flagged."""
    return store.query(
        "SELECT t.experiment AS experiment, t.version AS version, reason, "
        "uniqExact(f.trace_id, f.span_id) AS flagged FROM call_flags AS f "
        f"ARRAY JOIN f.reasons AS reason INNER JOIN {traces} AS t ON f.trace_id = t.trace_id "
        "WHERE f.project_id = {fl_p:String} "
        "AND f.call_time >= fromUnixTimestamp64Nano({fl_since:Int64}, 'UTC') "
        "GROUP BY experiment, version, reason ORDER BY experiment, version, reason",
        bind(traces, {"fl_p": project, "fl_since": since_ns}),
    )


def record_flags(
    store: Store, project: str, calls: Sequence[Mapping[str, Any]], window_key: str
) -> None:
    """Record `calls` (trace_id, span_id, start_ns, reasons) as flagged in the window."""
    if calls:
        insert(store, "call_flags", {
            "project_id": [project] * len(calls),
            "trace_id": [c["trace_id"] for c in calls],
            "span_id": [c["span_id"] for c in calls],
            "call_time": [c["start_ns"] for c in calls],
            "reasons": [list(c["reasons"]) for c in calls],
            "window_key": [window_key] * len(calls),
        })  # fmt: skip
