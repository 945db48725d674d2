"""The migrations' DDL for a ClickHouse cluster: replicated local tables and Distributed ones."""

from __future__ import annotations

import re

from driftline.store.migrations import MIGRATIONS_TABLE, Layout, Migration, migrations

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


class ClusterLayout(Layout):
    """The schema on a named cluster: each table as `<table>_local` (Replicated*MergeTree on
    each shard's replicas) behind a Distributed `<table>` that driftline reads and writes
    unchanged; each materialized view from local table to local table; each backfill through the
    Distributed tables; every statement ON CLUSTER.

    Rows go to shards by a hash of trace_id where the table has one (a trace stays on one
    shard); otherwise by a hash of the sorting key, so every version of a row that
    ReplacingMergeTree collapses lands on the same shard and FINAL stays correct."""

    def __init__(self, cluster: str, database: str = "driftline") -> None:
        self.cluster, self.database = cluster, database
        self.on = f"ON CLUSTER {_quote(cluster)}"

    def setup(self) -> list[str]:
        return [
            f"CREATE DATABASE IF NOT EXISTS {self.database} {self.on}",
            *self._statement(MIGRATIONS_TABLE),
        ]

    def render(self, migration: Migration) -> list[str]:
        return [out for sql in migration.statements for out in self._statement(sql)]

    def _statement(self, sql: str) -> list[str]:
        database, on = self.database, self.on
        if created := _CREATE.match(sql):
            return _create(sql, created.group(1), database, self.cluster, on)
        if view := _VIEW.match(sql):
            # Each shard's view adds the calls its own local table receives to its own local
            # rollup; reads through the Distributed rollup merge the states across shards.
            body = _TABLE_REF.sub(rf"\1 {database}.\2_local", sql[view.end() :])
            return [
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view.group(1)} {on} "
                f"TO {database}.{view.group(2)}_local AS{body}"
            ]
        if _INSERT.match(sql):
            # A backfill runs once, from the node the script is applied on: it reads every shard
            # through the Distributed tables and writes through them.
            return [_TABLE_REF.sub(rf"\1 {database}.\2", sql)]
        if altered := _ALTER.match(sql):
            table, rest = altered.group(1), sql[altered.end() :]
            out = [f"ALTER TABLE {database}.{table}_local {on} {rest}"]
            if "INDEX" not in rest:  # a Distributed table has columns but no data to index
                out.append(f"ALTER TABLE {database}.{table} {on} {rest}")
            return out
        raise ValueError(f"a migration statement this renderer does not know: {sql[:80]}")


def cluster_ddl(cluster: str, database: str = "driftline") -> list[str]:
    """Every migration for a new cluster, as one script, ending with the record of them all."""
    layout = ClusterLayout(cluster, database)
    statements = layout.setup()
    for migration in migrations():
        statements += layout.render(migration)
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
