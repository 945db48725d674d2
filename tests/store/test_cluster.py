"""Cluster DDL: the local tables run on chDB once the cluster parts are taken out, and every
statement, Distributed tables included, parses as ClickHouse SQL."""

from __future__ import annotations

import re

import pytest

from driftline.store import Store, StoreError
from driftline.store.cluster import cluster_ddl
from driftline.store.migrations import MIGRATIONS


def single_node(sql: str) -> str:
    """What a statement is without the cluster: no ON CLUSTER, no replication."""
    sql = sql.replace(" ON CLUSTER 'prod'", "")
    return re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?", r"\1(", sql).replace(
        "MergeTree()", "MergeTree"
    )


def test_local_tables_run_on_chdb_and_match_the_migrations(store: Store) -> None:
    store.command("CREATE DATABASE cluster_check")
    statements = cluster_ddl("prod", database="cluster_check")
    local = [s for s in statements if "Distributed(" not in s and not s.startswith("INSERT")]
    for sql in local:
        if not re.match(r"ALTER TABLE cluster_check\.\w+ ", sql) or "_local " in sql:
            store.command(single_node(sql))
    tables = {
        r["name"]: r["engine_full"]
        for r in store.query(
            "SELECT name, engine_full FROM system.tables WHERE database = 'cluster_check'"
        )
    }
    for name, engine in tables.items():
        assert name.endswith("_local"), name
        ours = store.query(
            f"SELECT name, type FROM system.columns WHERE database = 'driftline' AND table = "
            f"'{name.removesuffix('_local')}' ORDER BY position"
        )
        theirs = store.query(
            f"SELECT name, type FROM system.columns WHERE database = 'cluster_check' AND table = "
            f"'{name}' ORDER BY position"
        )
        assert theirs == ours, name
        plain = store.query(
            "SELECT engine_full FROM system.tables WHERE database = 'driftline' AND name = "
            f"'{name.removesuffix('_local')}'"
        )[0]["engine_full"]
        assert engine == plain, name
    created = {s.split()[5] for m in MIGRATIONS for s in m.statements if "CREATE" in s}
    assert {t.removesuffix("_local") for t in tables} == created | {"schema_migrations"}


def test_every_statement_parses_and_distributed_tables_shard_by_trace(store: Store) -> None:
    statements = cluster_ddl("prod")
    for sql in statements:
        assert store.query_arrow(f"EXPLAIN AST {sql}").num_rows >= 2, sql
    distributed = {s.split()[5]: s for s in statements if "ENGINE = Distributed(" in s}
    assert distributed["driftline.llm_calls"].endswith(
        "Distributed('prod', driftline, llm_calls_local, cityHash64(trace_id))"
    )
    assert "cityHash64(project_id, id)" in distributed["driftline.notifications"]
    replicated = [s for s in statements if "ReplicatedReplacingMergeTree" in s]
    assert any("'{replica}', updated_at)" in s for s in replicated)
    assert all("/clickhouse/tables/{shard}/driftline/" in s for s in replicated)


def test_cluster_name_is_checked() -> None:
    with pytest.raises(ValueError):
        cluster_ddl("prod'; DROP TABLE x; --")


def test_chdb_rejects_what_is_not_clickhouse(store: Store) -> None:
    with pytest.raises(StoreError):
        store.command(
            single_node("CREATE TABLE t (a UInt8) ENGINE = ReplacingMergeTree(b) ORDER BY a")
        )
