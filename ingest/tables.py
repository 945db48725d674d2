"""The ingest room's tables: `llm_calls`, `spans` and the hourly rollup `llm_calls_hourly`;
their DDL, by schema version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from driftline.store.arrow import NS, table_of
from driftline.store.base import Store
from driftline.store.migrations import ATTRS, BODY, Migration
from driftline.store.sql import Relation, Where, bind, iso

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
    attributes {ATTRS},
    resource_attributes {ATTRS},
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
    input_messages {BODY},
    output_messages {BODY},
    input_text {BODY},
    output_text {BODY},
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
    events {BODY},
    links {BODY},{_SPAN_TABLE_TAIL}"""


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


# ack = "store": an insert carries a token made from its rows' keys (ingest/writer.py), and a
# second insert with the same token is dropped. Replicated tables keep the tokens of their last
# inserts anyway; a table on one server keeps them only with this window.
_DEDUPLICATION_WINDOW = tuple(
    f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 10000"
    for table in ("llm_calls", "spans")
)


# Pending calls are found by when they arrived: the index skips every granule ingested before
# the watermark, whatever the history.
_INGESTED_INDEX = (
    "ALTER TABLE llm_calls ADD INDEX IF NOT EXISTS idx_ingested ingested_at TYPE minmax "
    "GRANULARITY 1"
)


_INGESTED_INDEX_BUILD = "ALTER TABLE llm_calls MATERIALIZE INDEX idx_ingested"


# OTLP metrics and logs (`/v1/metrics`, `/v1/logs`), stored as they are sent. A retried export
# repeats its rows exactly: the sorting keys make the copy one row.
_OTEL_METRICS = """
CREATE TABLE IF NOT EXISTS otel_metrics (
    project_id LowCardinality(String),
    service LowCardinality(String),
    name LowCardinality(String),
    unit LowCardinality(String),
    kind LowCardinality(String),
    temporality LowCardinality(String),
    series UInt64,
    attributes Map(LowCardinality(String), String),
    resource Map(LowCardinality(String), String),
    scope LowCardinality(String),
    start_time DateTime64(9, 'UTC'),
    time DateTime64(9, 'UTC'),
    value Float64,
    count UInt64,
    bucket_counts Array(UInt64),
    bounds Array(Float64),
    min Nullable(Float64),
    max Nullable(Float64),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, name, series, time, start_time)"""

_OTEL_LOGS = """
CREATE TABLE IF NOT EXISTS otel_logs (
    project_id LowCardinality(String),
    service LowCardinality(String),
    time DateTime64(9, 'UTC'),
    record_id String,
    severity_number UInt8,
    severity_text LowCardinality(String),
    event_name LowCardinality(String),
    body String CODEC(ZSTD(3)),
    attributes Map(LowCardinality(String), String),
    resource Map(LowCardinality(String), String),
    scope LowCardinality(String),
    trace_id String,
    span_id String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, time, record_id)"""


# Live A/B: the traces whose app chose a model version (sdk.choose_version's attributes, on any
# span of the trace), kept as they arrive, so comparing versions reads this small table rather
# than the attributes of every span of the period. From migration 13 on (no backfill: the
# attributes are new with it).
_EXPERIMENT_TRACES = """
CREATE TABLE IF NOT EXISTS experiment_traces (
    project_id LowCardinality(String),
    experiment LowCardinality(String),
    version LowCardinality(String),
    trace_id FixedString(32),
    start_time DateTime64(9, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, start_time, trace_id)"""


def _experiment_view(source: str) -> str:
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_traces_{source}_mv TO "
        "experiment_traces AS\n"
        "SELECT project_id, attributes['driftline.experiment.name'] AS experiment, "
        "attributes['driftline.experiment.version'] AS version, trace_id, start_time\n"
        f"FROM {source}\nWHERE attributes['driftline.experiment.version'] != ''"
    )


MIGRATIONS = (
    Migration(1, "calls and spans", (_LLM_CALLS, _SPANS)),
    Migration(7, "hourly rollup of calls for dashboards", (_HOURLY, _HOURLY_MV, _HOURLY_BACKFILL)),
    Migration(8, "calls found by when they arrived", (_INGESTED_INDEX, _INGESTED_INDEX_BUILD)),
    Migration(10, "OTLP metrics and logs", (_OTEL_METRICS, _OTEL_LOGS)),
    Migration(11, "inserts deduplicated by token on one server", _DEDUPLICATION_WINDOW),
    Migration(
        13,
        "traces in live A/B experiments",
        (_EXPERIMENT_TRACES, _experiment_view("spans"), _experiment_view("llm_calls")),
    ),
)

# Tables whose retention is configurable, and the column their TTL counts from.
RETENTION = {
    "llm_calls": "start_time",
    "spans": "start_time",
    "otel_metrics": "time",
    "otel_logs": "time",
}

_MAP = pa.map_(pa.string(), pa.string())
OTEL_METRICS = pa.schema(
    [
        ("project_id", pa.string()),
        ("service", pa.string()),
        ("name", pa.string()),
        ("unit", pa.string()),
        ("kind", pa.string()),
        ("temporality", pa.string()),
        ("series", pa.uint64()),
        ("attributes", _MAP),
        ("resource", _MAP),
        ("scope", pa.string()),
        ("start_time", NS),
        ("time", NS),
        ("value", pa.float64()),
        ("count", pa.uint64()),
        ("bucket_counts", pa.list_(pa.uint64())),
        ("bounds", pa.list_(pa.float64())),
        ("min", pa.float64()),
        ("max", pa.float64()),
    ]
)
OTEL_LOGS = pa.schema(
    [
        ("project_id", pa.string()),
        ("service", pa.string()),
        ("time", NS),
        ("record_id", pa.string()),
        ("severity_number", pa.uint8()),
        ("severity_text", pa.string()),
        ("event_name", pa.string()),
        ("body", pa.string()),
        ("attributes", _MAP),
        ("resource", _MAP),
        ("scope", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
    ]
)
SCHEMAS = {"otel_metrics": OTEL_METRICS, "otel_logs": OTEL_LOGS}


def insert_signal(store: Store, table: str, project: str, rows: list[dict[str, Any]]) -> None:
    """OTLP metric points or log records (`otel_metrics`, `otel_logs`), as decoded, of a project."""
    schema = SCHEMAS[table]
    columns = {name: [row[name] for row in rows] for name in schema.names if name != "project_id"}
    columns["project_id"] = [project] * len(rows)
    for name in ("attributes", "resource"):
        columns[name] = [list(m.items()) for m in columns[name]]
    store.insert_arrow(table, table_of(schema, columns))


def signal_summary(store: Store, project: str, since_ns: int) -> list[dict[str, Any]]:
    """Per OTLP metric (name, kind, unit) and per log event name since `since_ns`: rows, services,
    the last time one arrived."""
    params = {"p": project, "since": since_ns}
    metrics = store.query(
        "SELECT 'metric' AS signal, name, kind, unit, count() AS points, "
        "groupUniqArray(10)(service) AS services, "
        f"{iso('max(time)', 'last')} FROM otel_metrics FINAL WHERE project_id = {{p:String}} "
        "AND time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') GROUP BY name, kind, unit "
        "ORDER BY name, kind, unit",
        params,
    )
    logs = store.query(
        "SELECT 'log' AS signal, event_name AS name, '' AS kind, '' AS unit, count() AS points, "
        "groupUniqArray(10)(service) AS services, "
        f"{iso('max(time)', 'last')} FROM otel_logs FINAL WHERE project_id = {{p:String}} "
        "AND time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') GROUP BY event_name "
        "ORDER BY event_name",
        params,
    )
    return metrics + logs


# -- reads other rooms make (they never name these tables) -------------------------------------

# Figures over a set of calls, by name (the alert rules' `metric:` condition).
CALL_METRICS = {
    "calls": "toFloat64(count())",
    "error_rate": "countIf(error_type != '' OR status_code = 'error') / count()",
    "p50_latency_ms": "quantile(0.5)(duration_ms)",
    "p95_latency_ms": "quantile(0.95)(duration_ms)",
    "p99_latency_ms": "quantile(0.99)(duration_ms)",
    "tokens_per_call": "avg(total_tokens)",
    "cost_per_call": "avg(cost_usd)",
}
# What calls can be grouped by, and the column (or expression) that holds it.
CALL_DIMENSIONS = {
    "service": "service",
    "model": "if(response_model != '', response_model, request_model)",
    "agent": "agent_name",
    "environment": "environment",
    "service_version": "service_version",
    "provider": "provider",
}


def metric_by(
    store: Store,
    metric: str,
    by: Sequence[str],
    since_ns: int,
    until_ns: int,
    min_calls: int,
) -> list[dict[str, Any]]:
    """`metric` of the calls that started in (since, until], per project and `by` dimensions,
    where at least `min_calls` calls: rows of project_id, each dimension, calls and value."""
    dims = "".join(f"{CALL_DIMENSIONS[d]} AS {d}, " for d in by)
    return store.query(
        f"SELECT project_id, {dims}count() AS calls, {CALL_METRICS[metric]} AS value "
        "FROM llm_calls WHERE start_time > fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({until:Int64}, 'UTC') "
        f"GROUP BY {', '.join(['project_id', *by])} HAVING calls >= {{min_calls:UInt32}}",
        {"since": since_ns, "until": until_ns, "min_calls": min_calls},
    )


def hourly_by_model(store: Store, project: str, days: int) -> list[dict[str, Any]]:
    """The last `days`, per hour (`t`, Unix seconds) and model: calls, p95 latency, error
    rate and tokens."""
    return store.query(
        "SELECT toUnixTimestamp(toStartOfHour(start_time)) AS t, "
        f"{CALL_DIMENSIONS['model']} AS model, count() AS calls, "
        "quantile(0.95)(duration_ms) AS p95, countIf(status_code = 'error') / count() AS errors, "
        "sum(total_tokens) AS tokens FROM llm_calls WHERE project_id = {p:String} "
        "AND start_time > now() - toIntervalDay({days:UInt32}) GROUP BY t, model ORDER BY t",
        {"p": project, "days": days},
    )


def other_answer(store: Store, project: str, call: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest other answer to the same input as `call` (trace_id, span_id, input_text,
    output_text): another model version's or prompt's, for an A/B choice."""
    if not call["input_text"]:
        return None
    rows = store.query(
        "SELECT toString(trace_id) AS trace_id, toString(span_id) AS span_id, output_text, "
        f"{CALL_DIMENSIONS['model']} AS model, service_version "
        "FROM llm_calls WHERE project_id = {p:String} AND input_text = {input:String} "
        "AND span_id != {s:String} AND output_text != '' AND output_text != {out:String} "
        "ORDER BY start_time DESC LIMIT 1",
        {"p": project, "input": call["input_text"], "s": call["span_id"],
         "out": call["output_text"] or ""},
    )  # fmt: skip
    return rows[0] if rows else None


def calls_named(store: Store, project: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The calls whose trace or span id is among `ids`, oldest first, with their texts."""
    return store.query_with_values(
        "SELECT trace_id, span_id, input_messages, input_text, output_text, conversation_id, "
        "response_model, service FROM llm_calls FINAL WHERE project_id = {project:String} "
        "AND (toString(span_id) IN (SELECT value FROM {values}) "
        "OR toString(trace_id) IN (SELECT value FROM {values})) "
        "ORDER BY start_time, trace_id, span_id",
        sorted(ids),
        {"project": project},
    )


def review_texts(project: str, keys: Relation) -> Relation:
    """The texts a reviewer reads of each call in `keys` (a relation of trace_id, span_id)."""
    return Relation(
        "SELECT trace_id, span_id, input_text, output_text, input_messages, "
        f"{CALL_DIMENSIONS['model']} AS model, service, conversation_id "
        f"FROM llm_calls FINAL WHERE project_id = {{calls_p:String}} "
        f"AND (trace_id, span_id) IN {keys}",
        bind(keys, {"calls_p": project}),
    )


def selected(project: str, columns: str, condition: str, params: Mapping[str, Any]) -> Relation:
    """`columns` of the project's calls (alias `c`) that `condition` selects, e.g. a drift
    reference's members; the condition must bound `c.start_time`."""
    return Relation(
        f"SELECT {columns} FROM llm_calls AS c FINAL "
        f"WHERE c.project_id = {{selected_p:String}} AND {condition}",
        bind(dict(params), {"selected_p": project}),
    )


def arrivals(
    columns: str,
    after_ns: int,
    after_key: tuple[str, str, str],
    upto_ns: int,
    started_since_ns: int,
    operations: Sequence[str],
    answered_only: bool = True,
) -> Relation:
    """`columns` (of alias `c`) and `ingested_ns` of the calls (with an answer, unless
    `answered_only` is False) stored after position (after_ns, after_key) in arrival order, by
    `upto_ns`, that started since `started_since_ns`: what arrived for the embedder or the
    evaluators. An empty key means after all of `after_ns`; the minmax index on `ingested_at`
    skips every older granule."""
    at = "fromUnixTimestamp64Nano({after_ns:Int64}, 'UTC')"
    params: dict[str, Any] = {
        "after_ns": after_ns,
        "upto_ns": upto_ns,
        "since": started_since_ns,
        "operations": list(operations),
    }
    if any(after_key):
        after = (
            f"c.ingested_at >= {at} AND (c.ingested_at > {at} OR "
            "(c.project_id, c.trace_id, c.span_id) > "
            "({after_p:String}, {after_t:String}, {after_s:String}))"
        )
        params.update(after_p=after_key[0], after_t=after_key[1], after_s=after_key[2])
    else:
        after = f"c.ingested_at > {at}"
    return Relation(
        f"SELECT {columns}, toUnixTimestamp64Nano(c.ingested_at) AS ingested_ns "
        f"FROM llm_calls AS c WHERE {after} "
        "AND c.ingested_at <= fromUnixTimestamp64Nano({upto_ns:Int64}, 'UTC') "
        "AND c.start_time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND c.operation IN {operations:Array(String)}"
        + (" AND notEmpty(c.output_text)" if answered_only else ""),
        params,
    )


def texts_of(
    store: Store, project: str, keys: Sequence[str], first_ns: int, last_ns: int
) -> dict[str, tuple[str, str]]:
    """trace_id + span_id → (input_text, output_text) of the project's calls among `keys`
    that started within [first_ns, last_ns] (the bound keeps the read on the sorting key)."""
    rows = store.query(
        "SELECT concat(trace_id, span_id) AS k, any(input_text) AS i, any(output_text) AS o "
        "FROM llm_calls WHERE project_id = {p:String} "
        "AND start_time >= fromUnixTimestamp64Nano({first:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({last:Int64}, 'UTC') "
        "AND concat(trace_id, span_id) IN {keys:Array(String)} GROUP BY k",
        {"p": project, "first": first_ns, "last": last_ns, "keys": list(keys)},
    )
    return {row["k"]: (row["i"], row["o"]) for row in rows}


# -- the calls explorer's reads (GET /api/calls, /api/traces) ----------------------------------

_TIMES = (
    "toUnixTimestamp64Nano(start_time) AS start_time_unix_nano, "
    "concat(replaceOne(toString(start_time), ' ', 'T'), 'Z') AS start_iso, "
    "concat(replaceOne(toString(end_time), ' ', 'T'), 'Z') AS end_iso"
)
_COMMON = (
    "trace_id, span_id, parent_span_id, duration_ms, service, service_version, environment, "
    "span_name, status_code, status_message, attributes, resource_attributes"
)
_CALL_COLUMNS = (
    f"{_COMMON}, {_TIMES}, operation, provider, request_model, response_model, input_messages, "
    "output_messages, input_text, output_text, input_tokens, output_tokens, total_tokens, "
    "cost_usd, finish_reasons, error_type, conversation_id, user_id, agent_name"
)
_SPAN_COLUMNS = f"{_COMMON}, {_TIMES}, kind, scope_name, events, links"

Position = tuple[int, str, str]
"""Where a page of calls ends: (start time in ns, trace id, span id)."""


@dataclass(frozen=True)
class CallFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    model: str | None = None  # the request or the response model
    service: str | None = None
    operation: str | None = None
    status: Literal["ok", "error", "unset"] | None = None
    text: str | None = None  # in the input or the output, case-insensitive


def _where(project: str, f: CallFilter) -> Where:
    where = Where("project_id = {project:String}", project=project)
    where.between("start_time", f.since_ns, f.until_ns)
    if f.model:
        where.add(
            "request_model = {model:String} OR response_model = {model:String}", model=f.model
        )
    where.equals("service", f.service).equals("operation", f.operation)
    where.equals("status_code", f.status)
    if f.text:
        where.add(
            "positionCaseInsensitiveUTF8(input_text, {q:String}) > 0 "
            "OR positionCaseInsensitiveUTF8(output_text, {q:String}) > 0",
            q=f.text,
        )
    return where


def list_calls(
    store: Store, project: str, f: CallFilter, limit: int, after: Position | None = None
) -> list[dict[str, Any]]:
    """Calls newest first, from just past `after`; each row has `start_time_unix_nano`."""
    where = _where(project, f)
    if after is not None:
        where.add(
            "(start_time, trace_id, span_id) < (fromUnixTimestamp64Nano({c_ns:Int64}, 'UTC'), "
            "{c_trace:String}, {c_span:String})",
            c_ns=after[0], c_trace=after[1], c_span=after[2],
        )  # fmt: skip
    rows = store.query(
        f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL WHERE {where} "
        "ORDER BY start_time DESC, trace_id DESC, span_id DESC LIMIT {limit:UInt32}",
        {**where.params, "limit": limit},
    )
    return [_row(r, "llm_call") for r in rows]


def call_summary(store: Store, project: str, f: CallFilter) -> dict[str, Any]:
    """Figures over the calls `f` selects (bound its time range): calls, error_rate,
    p50/p95_latency_ms, input/output/total tokens, cost_usd; rates and latencies are None
    without calls."""
    where = _where(project, f)
    [row] = store.query(
        f"SELECT count() AS calls, {CALL_METRICS['error_rate']} AS error_rate, "
        f"{CALL_METRICS['p50_latency_ms']} AS p50_latency_ms, "
        f"{CALL_METRICS['p95_latency_ms']} AS p95_latency_ms, "
        "sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
        "sum(total_tokens) AS total_tokens, sum(cost_usd) AS cost_usd "
        f"FROM llm_calls FINAL WHERE {where}",
        where.params,
    )
    if not row["calls"]:
        row.update(error_rate=None, p50_latency_ms=None, p95_latency_ms=None)
    return row


def trace(store: Store, project: str, trace_id: str) -> list[dict[str, Any]]:
    """Every span of a trace, LLM calls included, by start time; empty when none."""
    where = Where("project_id = {project:String}", project=project).equals("trace_id", trace_id)
    calls = store.query(f"SELECT {_CALL_COLUMNS} FROM llm_calls FINAL WHERE {where}", where.params)
    spans = store.query(f"SELECT {_SPAN_COLUMNS} FROM spans FINAL WHERE {where}", where.params)
    items = [_row(r, "llm_call") for r in calls] + [_row(r, "span") for r in spans]
    items.sort(key=lambda r: r["start_time_unix_nano"])
    return items


def response_lengths(store: Store, project: str, span_ids: list[str]) -> dict[tuple[str, str], int]:
    """(trace id, span id) → characters in the call's response, for the calls found."""
    return {
        (row["trace_id"], row["span_id"]): row["length"]
        for row in store.query(
            "SELECT trace_id, span_id, lengthUTF8(output_text) AS length FROM llm_calls "
            "WHERE project_id = {p:String} AND span_id IN {spans:Array(String)}",
            {"p": project, "spans": sorted(span_ids)},
        )
    }


def _row(row: dict[str, Any], kind: str) -> dict[str, Any]:
    row["type"] = kind
    row["start_time"], row["end_time"] = row.pop("start_iso"), row.pop("end_iso")
    row["attributes"] = dict(row["attributes"])
    row["resource_attributes"] = dict(row["resource_attributes"])
    for key in ("input_messages", "output_messages", "events", "links"):
        if key in row:
            row[key] = orjson.loads(row[key]) if row[key] else []
    return row


# -- the writer's check for spans already stored --------------------------------------------------


def existing_keys(store: Store, table: str, rows: pa.Table) -> set[str]:
    """The `project/trace/span` keys among `rows` that the table already holds."""
    if rows.num_rows == 0:
        return set()
    times = pc.min_max(rows.column("start_time").cast(pa.int64()))
    found = store.query_with_values(
        f"SELECT project_id, trace_id, span_id FROM {table} "
        "WHERE project_id IN {projects:Array(String)} "
        "AND start_time BETWEEN fromUnixTimestamp64Nano({lo:Int64}, 'UTC') "
        "AND fromUnixTimestamp64Nano({hi:Int64}, 'UTC') "
        "AND trace_id IN (SELECT value FROM {values})",
        pc.unique(rows.column("trace_id")).to_pylist(),
        {
            "projects": pc.unique(rows.column("project_id")).to_pylist(),
            "lo": times["min"].as_py(),
            "hi": times["max"].as_py(),
        },
    )
    return set(keys_of(pa.Table.from_pylist(found)).to_pylist()) if found else set()


def keys_of(table: pa.Table) -> pa.Array:
    """`project/trace/span` per row, to compare batches with what the store holds."""
    return pc.binary_join_element_wise(
        table.column("project_id"), table.column("trace_id"), table.column("span_id"), "/"
    )


# -- live A/B of model versions (sdk.choose_version records the choice on a span) --------------


def experiment_traces(project: str, since_ns: int) -> Relation:
    """trace_id, experiment, version of the project's traces since `since_ns` whose app chose
    a version."""
    return Relation(
        "SELECT trace_id, any(experiment) AS experiment, any(version) AS version "
        "FROM experiment_traces WHERE project_id = {exp_p:String} "
        "AND start_time >= fromUnixTimestamp64Nano({exp_since:Int64}, 'UTC') GROUP BY trace_id",
        {"exp_p": project, "exp_since": since_ns},
    )


def experiment_projects(store: Store, since_ns: int) -> list[str]:
    """The projects with traces in live A/B experiments since `since_ns`."""
    rows = store.query(
        "SELECT DISTINCT project_id FROM experiment_traces "
        "WHERE start_time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') ORDER BY project_id",
        {"since": since_ns},
    )
    return [row["project_id"] for row in rows]


def experiment_call_stats(store: Store, project: str, since_ns: int) -> list[dict[str, Any]]:
    """Per experiment and version, of the LLM calls in its traces since `since_ns`: calls, and
    the mean and variance of being an error, the latency and the cost."""
    traces = experiment_traces(project, since_ns)
    error = "toFloat64(c.status_code = 'error' OR c.error_type != '')"
    return store.query(
        f"SELECT t.experiment AS experiment, t.version AS version, count() AS calls, "
        f"avg({error}) AS error_mean, varSamp({error}) AS error_var, "
        "avg(c.duration_ms) AS latency_mean, varSamp(c.duration_ms) AS latency_var, "
        "avg(c.cost_usd) AS cost_mean, varSamp(c.cost_usd) AS cost_var "
        f"FROM llm_calls AS c FINAL INNER JOIN {traces} AS t ON c.trace_id = t.trace_id "
        "WHERE c.project_id = {exp_p:String} "
        "AND c.start_time >= fromUnixTimestamp64Nano({exp_since:Int64}, 'UTC') "
        "GROUP BY experiment, version ORDER BY experiment, version",
        traces.params,
    )
