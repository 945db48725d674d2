"""Cluster DDL: the local tables run on chDB once the cluster parts are taken out, and every
statement, Distributed tables included, parses as ClickHouse SQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from driftline.store import Store, StoreError
from driftline.store.cluster import cluster_ddl
from driftline.store.migrations import migrations


def single_node(sql: str) -> str:
    """What a statement is without the cluster: no ON CLUSTER, no replication."""
    sql = sql.replace(" ON CLUSTER 'prod'", "")
    return re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?", r"\1(", sql).replace(
        "MergeTree()", "MergeTree"
    )


@pytest.fixture
def cluster_check(store: Store) -> Iterator[Store]:
    """`store` with a database `cluster_check`, dropped after the test (a server's outlives it)."""
    store.command("CREATE DATABASE cluster_check")
    yield store
    store.command("DROP DATABASE cluster_check")


def test_local_tables_run_on_chdb_and_match_the_migrations(cluster_check: Store) -> None:
    store = cluster_check
    statements = cluster_ddl("prod", database="cluster_check")
    local = [s for s in statements if "Distributed(" not in s and not s.startswith("INSERT")]
    for sql in local:
        if not re.match(r"ALTER TABLE cluster_check\.\w+ ", sql) or "_local " in sql:
            store.command(single_node(sql))
    tables = {
        r["name"]: r["engine_full"]
        for r in store.query(
            "SELECT name, engine_full FROM system.tables WHERE database = 'cluster_check' "
            "AND engine != 'MaterializedView'"
        )
    }
    for name, engine in tables.items():
        assert name.endswith("_local"), name
        ours = store.query(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = "
            f"'{name.removesuffix('_local')}' ORDER BY position",
            {"d": store.database},
        )
        theirs = store.query(
            f"SELECT name, type FROM system.columns WHERE database = 'cluster_check' AND table = "
            f"'{name}' ORDER BY position"
        )
        assert theirs == ours, name
        plain = store.query(
            f"SELECT engine_full FROM system.tables WHERE database = '{store.database}' AND name = "
            f"'{name.removesuffix('_local')}'"
        )[0]["engine_full"]
        assert engine == plain, name
    created = {s.split()[5] for m in migrations() for s in m.statements if "CREATE TABLE" in s}
    assert {t.removesuffix("_local") for t in tables} == created | {"schema_migrations"}


def test_the_rollup_view_feeds_each_shards_local_rollup_and_the_backfill_counts_once(
    cluster_check: Store,
) -> None:
    store = cluster_check
    statements = cluster_ddl("prod", database="cluster_check")
    view = next(s for s in statements if "MATERIALIZED VIEW" in s)
    assert " TO cluster_check.llm_calls_hourly_local AS" in view
    assert "FROM cluster_check.llm_calls_local\n" in view and "ON CLUSTER 'prod'" in view
    backfill = next(s for s in statements if s.startswith("INSERT INTO cluster_check.llm_calls_h"))
    assert "FROM cluster_check.llm_calls\n" in backfill
    assert "GLOBAL NOT IN (SELECT DISTINCT hour FROM cluster_check.llm_calls_hourly)" in backfill
    assert statements.index(view) < statements.index(backfill)
    for sql in statements:
        if (sql.startswith("CREATE TABLE") and "Distributed(" not in sql) or sql == view:
            store.command(single_node(sql))
    # One shard's view of it: calls stored before the view existed are backfilled, those after
    # go through the view, and a second backfill adds nothing.
    store.command("DROP VIEW cluster_check.llm_calls_hourly_mv")
    insert = (
        "INSERT INTO cluster_check.llm_calls_local (project_id, trace_id, span_id, start_time, "
        "duration_ms, service, status_code) SELECT 'p', lower(hex(MD5(toString(number + {o})))), "
        "'0123456789abcdef', now64(9, 'UTC') - toIntervalMinute(number * 7), number, 's', "
        "if(number % 3 = 0, 'error', 'ok') FROM numbers(300)"
    )
    store.command(insert.format(o=0))
    store.command(single_node(view))
    on_one_shard = re.sub(r"cluster_check\.(\w+)", r"cluster_check.\1_local", backfill)
    store.command(on_one_shard)
    store.command(insert.format(o=1000))
    store.command(on_one_shard)
    totals = store.query(
        "SELECT countMerge(calls) AS calls, countIfMerge(errors) AS errors "
        "FROM cluster_check.llm_calls_hourly_local"
    )
    assert totals == [{"calls": 600, "errors": 200}]


def test_every_statement_parses_and_distributed_tables_shard_by_trace(store: Store) -> None:
    statements = cluster_ddl("prod")
    for sql in statements:
        # As a command: the `FORMAT Arrow` a query gets binds to the explained statement, so a
        # server answers EXPLAIN in its default format (TSV), which is no Arrow table.
        store.command(f"EXPLAIN AST {sql}")
    distributed = {s.split()[5]: s for s in statements if "ENGINE = Distributed(" in s}
    assert distributed["driftline.llm_calls"].endswith(
        "Distributed('prod', driftline, llm_calls_local, cityHash64(trace_id))"
    )
    assert "cityHash64(project_id, id)" in distributed["driftline.notifications"]
    replicated = [s for s in statements if "ReplicatedReplacingMergeTree" in s]
    assert any("'{replica}', updated_at)" in s for s in replicated)
    assert all("/clickhouse/tables/{shard}/driftline/" in s for s in replicated)
    assert (
        "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/driftline/"
        "llm_calls_hourly', '{replica}')" in distributed_source(statements, "llm_calls_hourly")
    )
    assert distributed["driftline.llm_calls_hourly"].endswith(
        "llm_calls_hourly_local, cityHash64(project_id, hour, service, model, agent, "
        "service_version))"
    )


def distributed_source(statements: list[str], table: str) -> str:
    """The CREATE statement of a Distributed table's local table."""
    return next(
        s
        for s in statements
        if s.startswith(f"CREATE TABLE IF NOT EXISTS driftline.{table}_local ")
    )


def test_cluster_name_is_checked() -> None:
    with pytest.raises(ValueError):
        cluster_ddl("prod'; DROP TABLE x; --")


def test_chdb_rejects_what_is_not_clickhouse(store: Store) -> None:
    with pytest.raises(StoreError):
        store.command(
            single_node("CREATE TABLE t (a UInt8) ENGINE = ReplacingMergeTree(b) ORDER BY a")
        )
