"""The store on every backend: the embedded ClickHouse (chDB), the server backend against the
stand-in for a server (tests/clickhouse_http.py), and a real server when DRIFTLINE_CLICKHOUSE_URL
is set (tests/conftest.py's BACKENDS)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from driftline.store import Store, StoreError, apply_retention, migrate, open_store
from driftline.store.migrations import migrations, schema_version
from tests.conftest import migrate_to
from tests.deploy.seed import seed


def _engine_full(store: Store, table: str) -> str:
    rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        {"d": store.database, "t": table},
    )
    return str(rows[0]["engine_full"])


def test_migrations_are_versioned_and_run_once(store: Store) -> None:
    assert schema_version(store) == migrations()[-1].version
    assert migrate(store) == []
    rows = store.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [m.version for m in migrations()]


def test_a_newer_schema_is_refused(store: Store) -> None:
    store.command("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(StoreError, match="newer than this driftline"):
        migrate(store)


def test_tables_partition_by_month_order_by_project_and_time_compress_bodies(store: Store) -> None:
    for table in ("llm_calls", "spans"):
        engine = _engine_full(store, table)
        assert "PARTITION BY toYYYYMM(start_time)" in engine
        assert "ORDER BY (project_id, start_time, trace_id, span_id)" in engine
    codecs = store.query(
        "SELECT name, compression_codec FROM system.columns WHERE database = {d:String} "
        "AND table = 'llm_calls' AND name IN ('input_messages', 'output_text', 'attributes')",
        {"d": store.database},
    )
    assert {r["name"] for r in codecs} == {"input_messages", "output_text", "attributes"}
    assert all("ZSTD" in r["compression_codec"] for r in codecs)


def test_retention_follows_config(store: Store) -> None:
    apply_retention(store, {"llm_calls": 30, "spans": 7})
    assert "toIntervalDay(30)" in _engine_full(store, "llm_calls")
    assert "toIntervalDay(7)" in _engine_full(store, "spans")
    apply_retention(store, {"llm_calls": 0})
    assert "TTL" not in _engine_full(store, "llm_calls")
    with pytest.raises(StoreError, match="unknown table"):
        apply_retention(store, {"clicks": 3})


def test_insert_query_and_parameters(store: Store) -> None:
    store.command(
        "CREATE TABLE t (name String, tags Array(String)) ENGINE = MergeTree ORDER BY name"
    )
    store.insert_arrow("t", pa.table({"name": ["a", "b'c"], "tags": [["x"], ["y", "z\\"]]}))
    assert store.query("SELECT name FROM t WHERE name = {n:String}", {"n": "b'c"}) == [
        {"name": "b'c"}
    ]
    rows = store.query("SELECT name FROM t WHERE has({tags:Array(String)}, tags[1]) ORDER BY name",
                       {"tags": ["x", "y"]})  # fmt: skip
    assert [r["name"] for r in rows] == ["a", "b'c"]
    found = store.query_with_values("SELECT name FROM t WHERE name IN (SELECT value FROM {values})",
                                    ["b'c", "nope"])  # fmt: skip
    assert found == [{"name": "b'c"}]
    with pytest.raises(StoreError, match="Unknown"):
        store.query("SELECT no_such_column FROM t")


def test_an_insert_takes_settings_and_a_token_stores_it_once(store: Store) -> None:
    store.command(
        "CREATE TABLE d (n UInt32) ENGINE = MergeTree ORDER BY n "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    for token in ("one", "one", "two"):
        store.insert_arrow("d", pa.table({"n": [1, 2]}), {"insert_deduplication_token": token})
    assert store.query("SELECT count() AS n FROM d")[0]["n"] == 4
    with pytest.raises(StoreError, match="no_such_setting"):
        store.insert_arrow("d", pa.table({"n": [3]}), {"no_such_setting": 1})


def test_data_survives_reopening(open_backend: Callable[[], Store]) -> None:
    first = open_backend()
    migrate(first)
    first.command("INSERT INTO projects (project_id) VALUES ('kept')")
    first.close()
    second = open_backend()
    try:
        assert second.query("SELECT project_id FROM projects") == [{"project_id": "kept"}]
    finally:
        second.close()


@pytest.mark.skipif(not os.environ.get("DRIFTLINE_CLICKHOUSE_URL"),
                    reason="needs a ClickHouse server: set DRIFTLINE_CLICKHOUSE_URL")  # fmt: skip
def test_server_backend_runs_the_same_sql() -> None:
    server = open_store(clickhouse_url=os.environ["DRIFTLINE_CLICKHOUSE_URL"])
    try:
        migrate(server)
        assert schema_version(server) == migrations()[-1].version
        apply_retention(server, {"llm_calls": 90, "spans": 30})
        found = server.query_with_values(
            "SELECT value FROM {values} WHERE value != 'b'", ["a", "b", "c"]
        )
        assert sorted(r["value"] for r in found) == ["a", "c"]
    finally:
        server.close()


def test_bad_server_url_is_named() -> None:
    with pytest.raises(StoreError, match="clickhouse url must look like"):
        open_store(clickhouse_url="clickhouse:8123")


def test_a_failed_query_does_not_spoil_the_next(store: Store) -> None:
    with pytest.raises(StoreError):
        store.query("SELECT throwIf(number = 3, 'boom') FROM numbers(10)")
    assert store.query("SELECT 1 AS x") == [{"x": 1}]
    assert store.ping()


_TOTALS = (
    "SELECT {calls} AS calls, {errors} AS errors, {tokens} AS tokens, round({cost}, 9) AS cost "
    "FROM {table}"
)
_RAW = _TOTALS.format(
    calls="count()",
    errors="countIf(status_code = 'error' OR error_type != '')",
    tokens="sum(total_tokens)",
    cost="sum(cost_usd)",
    table="llm_calls",
)
_ROLLUP = _TOTALS.format(
    calls="countMerge(calls)",
    errors="countIfMerge(errors)",
    tokens="sumMerge(total_tokens)",
    cost="sumMerge(cost)",
    table="llm_calls_hourly",
)


def test_the_hourly_rollup_backfills_old_calls_once_and_follows_new_ones(
    open_backend: Callable[[], Store],
) -> None:
    store = open_backend()
    try:
        migrate_to(store, 6)
        seed(store, 2000, days=3)
        raw = store.query(_RAW)
        assert raw[0]["calls"] == 2000 and raw[0]["errors"] > 0
        assert migrate(store) == [m.version for m in migrations() if m.version >= 7]
        assert schema_version(store) == migrations()[-1].version
        assert store.query(_ROLLUP) == raw
        backfill = next(m for m in migrations() if m.version == 7).statements[-1]
        store.command(backfill)  # a start that died before recording the migration runs it again
        assert store.query(_ROLLUP) == raw
        hours = store.query("SELECT uniqExact(toStartOfHour(start_time)) AS n FROM llm_calls")
        assert 60 <= hours[0]["n"] <= 73
        # The writer's own insert path (Arrow through Python(), or over HTTP) feeds the view.
        now = datetime.now(UTC)
        store.insert_arrow(
            "llm_calls",
            pa.table(
                {
                    "project_id": ["alpha", "alpha"],
                    "trace_id": ["a" * 32, "b" * 32],
                    "span_id": ["c" * 16, "d" * 16],
                    "start_time": pa.array(
                        [now, now - timedelta(days=40)], pa.timestamp("ns", "UTC")
                    ),
                    "duration_ms": [12.5, 40.0],
                    "service": ["new-service", "new-service"],
                    "status_code": ["error", "ok"],
                    "total_tokens": pa.array([10, 20], pa.uint32()),
                    "cost_usd": [0.5, 0.25],
                }
            ),
        )
        after = store.query(_ROLLUP)
        assert after == store.query(_RAW)
        assert after[0]["calls"] == 2002 and after[0]["errors"] == raw[0]["errors"] + 1
        late = store.query(
            "SELECT countMerge(calls) AS n FROM llm_calls_hourly WHERE service = 'new-service' "
            "AND hour = toStartOfHour({t:DateTime('UTC')})",
            {"t": (now - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S")},
        )
        assert late == [{"n": 1}]
    finally:
        store.close()
