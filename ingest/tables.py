"""The ingest room's tables: `llm_calls`, `spans` and the hourly rollup `llm_calls_hourly`;
their DDL, by schema version."""

from __future__ import annotations

from driftline.store.migrations import ATTRS, BODY, Migration

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


# Pending calls are found by when they arrived: the index skips every granule ingested before
# the watermark, whatever the history.
_INGESTED_INDEX = (
    "ALTER TABLE llm_calls ADD INDEX IF NOT EXISTS idx_ingested ingested_at TYPE minmax "
    "GRANULARITY 1"
)


_INGESTED_INDEX_BUILD = "ALTER TABLE llm_calls MATERIALIZE INDEX idx_ingested"


MIGRATIONS = (
    Migration(1, "calls and spans", (_LLM_CALLS, _SPANS)),
    Migration(7, "hourly rollup of calls for dashboards", (_HOURLY, _HOURLY_MV, _HOURLY_BACKFILL)),
    Migration(8, "calls found by when they arrived", (_INGESTED_INDEX, _INGESTED_INDEX_BUILD)),
)

# Tables whose retention is configurable, and the column their TTL counts from.
RETENTION = {"llm_calls": "start_time", "spans": "start_time"}
