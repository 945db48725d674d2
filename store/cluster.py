"""The migrations' DDL for a ClickHouse cluster: replicated local tables and Distributed ones."""

from __future__ import annotations

import re

from driftline.store.migrations import migrations

ZOOKEEPER_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
_CREATE = re.compile(r"^\s*CREATE TABLE IF NOT EXISTS (\w+) \(")
_ALTER = re.compile(r"^\s*ALTER TABLE (\w+) ")
_VIEW = re.compile(r"^\s*CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b")
_INSERT = re.compile(r"^\s*INSERT INTO \w+")
_TABLE_REF = re.compile(r"\b(FROM|INTO)\s+(\w+)")
_ENGINE = re.compile(
    r"\) ENGINE = (ReplacingMergeTree|AggregatingMergeTree|MergeTree)(?:\((\w+)\))?"
)
_ORDER_BY = re.compile(r"ORDER BY \(?([\w, ]+?)\)?\s*(?:TTL [^\n]*)?$")
_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
    "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
)


def cluster_ddl(cluster: str, database: str = "driftline") -> list[str]:
    """Every table of every migration as `<table>_local` (Replicated*MergeTree on each shard's
    replicas) behind a Distributed `<table>` that driftline reads and writes unchanged; each
    materialized view from local table to local table, each backfill through Distributed ones.

    Rows go to shards by a hash of trace_id where the table has one (a trace stays on one
    shard); otherwise by a hash of the sorting key, so every version of a row that
    ReplacingMergeTree collapses lands on the same shard and FINAL stays correct."""
    on = f"ON CLUSTER {_quote(cluster)}"
    statements = [f"CREATE DATABASE IF NOT EXISTS {database} {on}"]
    for sql in (_MIGRATIONS_TABLE, *(s for m in migrations() for s in m.statements)):
        if created := _CREATE.match(sql):
            statements += _create(sql, created.group(1), database, cluster, on)
        elif view := _VIEW.match(sql):
            # Each shard's view adds the calls its own local table receives to its own local
            # rollup; reads through the Distributed rollup merge the states across shards.
            body = _TABLE_REF.sub(rf"\1 {database}.\2_local", sql[view.end() :])
            statements.append(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view.group(1)} {on} "
                f"TO {database}.{view.group(2)}_local AS{body}"
            )
        elif _INSERT.match(sql):
            # A backfill runs once, from the node the script is applied on: it reads every shard
            # through the Distributed tables and writes through them.
            statements.append(_TABLE_REF.sub(rf"\1 {database}.\2", sql))
        elif altered := _ALTER.match(sql):
            table = altered.group(1)
            rest = sql[altered.end() :]
            statements.append(f"ALTER TABLE {database}.{table}_local {on} {rest}")
            if "INDEX" not in rest:  # a Distributed table has columns but no data to index
                statements.append(f"ALTER TABLE {database}.{table} {on} {rest}")
        else:
            raise ValueError(f"a migration statement this renderer does not know: {sql[:80]}")
    versions = ", ".join(f"({m.version}, {_string(m.name)})" for m in migrations())
    statements.append(f"INSERT INTO {database}.schema_migrations (version, name) VALUES {versions}")
    return statements


def _create(sql: str, table: str, database: str, cluster: str, on: str) -> list[str]:
    engine = _ENGINE.search(sql)
    if engine is None:
        raise ValueError(f"{table}: engine is not a MergeTree, Replacing or Aggregating")
    path = ZOOKEEPER_PATH.replace("{database}", database).replace("{table}", table)
    version = f", {engine.group(2)}" if engine.group(2) else ""
    replicated = f") ENGINE = Replicated{engine.group(1)}('{path}', '{{replica}}'{version})"
    columns_onwards = sql[sql.index("(") + 1 : engine.start()] + replicated + sql[engine.end() :]
    local = f"CREATE TABLE IF NOT EXISTS {database}.{table}_local {on} ({columns_onwards}"
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {database}.{table} {on} AS {database}.{table}_local "
        f"ENGINE = Distributed({_quote(cluster)}, {database}, {table}_local, "
        f"{_sharding_key(sql)})"
    )
    return [local, distributed]


def _sharding_key(sql: str) -> str:
    if re.search(r"^\s*trace_id ", sql, re.MULTILINE):
        return "cityHash64(trace_id)"
    order = _ORDER_BY.search(sql.strip())
    if order is None:
        raise ValueError("a table with neither trace_id nor ORDER BY")
    return f"cityHash64({order.group(1).strip()})"


def _quote(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise ValueError(f"cluster name {name!r}: letters, digits, '_' and '-' only")
    return f"'{name}'"


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
