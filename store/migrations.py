"""Forward-only, versioned schema migrations, collected from the rooms, and per-table retention.

Each room owns its tables: its `tables` module (`driftline.<room>.tables`; the keys' in
`driftline.store.keys`) holds their DDL as `MIGRATIONS`, its part of each schema version, and
`RETENTION` for the tables whose TTL is configurable. A schema version is every room's part of
it, applied in the order of the data flow.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from driftline.store.base import Store, StoreError

# Column types the rooms' DDL shares.
BODY = "String CODEC(ZSTD(3))"
ATTRS = "Map(LowCardinality(String), String) CODEC(ZSTD(3))"

# The modules that own tables, in the order of the data flow. Named, not imported: the store
# sits below every room (DESIGN.md) and reads their DDL only when it migrates.
TABLE_MODULES = (
    "driftline.store.keys",
    "driftline.ingest.tables",
    "driftline.detectors.tables",
    "driftline.review.tables",
    "driftline.evaluators.tables",
    "driftline.finetune.tables",
    "driftline.alerts.tables",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The schema's versions in order, each with every room's part of it."""
    parts: dict[int, list[Migration]] = {}
    for module in TABLE_MODULES:
        for part in importlib.import_module(module).MIGRATIONS:
            parts.setdefault(part.version, []).append(part)
    if sorted(parts) != list(range(1, len(parts) + 1)):
        raise StoreError(f"schema versions must run 1, 2, 3, ...; the rooms give {sorted(parts)}")
    return tuple(
        Migration(
            version,
            "; ".join(p.name for p in parts[version]),
            tuple(s for p in parts[version] for s in p.statements),
        )
        for version in sorted(parts)
    )


@functools.cache
def retention_columns() -> dict[str, str]:
    """Tables whose retention is configurable, and the column their TTL counts from."""
    found: dict[str, str] = {}
    for module in TABLE_MODULES:
        found.update(getattr(importlib.import_module(module), "RETENTION", {}))
    return found


MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
    "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
)


class Layout:
    """How the schema is laid out: here, plain tables on one node. `store.cluster` lays it out
    on a cluster (replicated local tables behind Distributed ones)."""

    def setup(self) -> list[str]:
        """What must exist before the applied versions can be read."""
        return [MIGRATIONS_TABLE]

    def render(self, migration: Migration) -> list[str]:
        """A migration's statements in this layout."""
        return list(migration.statements)


def pending(store: Store, layout: Layout | None = None) -> list[tuple[Migration, list[str]]]:
    """Each migration the database lacks, with its statements in `layout`; StoreError when the
    database is newer than this code."""
    layout = layout or Layout()
    schema = migrations()
    found = store.query(
        "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'schema_migrations'"
    )
    applied = (
        {row["version"] for row in store.query("SELECT version FROM schema_migrations")}
        if found[0]["n"]
        else set()
    )
    known = schema[-1].version
    if applied and max(applied) > known:
        raise StoreError(
            f"database schema is at version {max(applied)}, newer than this driftline knows "
            f"({known}); upgrade driftline instead of running an older one against it"
        )
    return [(m, layout.render(m)) for m in schema if m.version not in applied]


def migrate(store: Store, layout: Layout | None = None) -> list[int]:
    """Apply every migration the database lacks, in order; return the versions applied."""
    layout = layout or Layout()
    for statement in layout.setup():
        store.command(statement)
    done = []
    for migration, statements in pending(store, layout):
        for statement in statements:
            store.command(statement)
        store.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
            {"v": migration.version, "n": migration.name},
        )
        done.append(migration.version)
    return done


def schema_version(store: Store) -> int:
    rows = store.query("SELECT max(version) AS v FROM schema_migrations")
    return int(rows[0]["v"] or 0)


def apply_retention(store: Store, days_by_table: Mapping[str, int]) -> None:
    """Set each table's TTL to the configured days (0 keeps rows forever)."""
    for table, days in days_by_table.items():
        column = retention_columns().get(table)
        if column is None:
            raise StoreError(
                f"retention set for unknown table {table!r}; known: {sorted(retention_columns())}"
            )
        if days < 0:
            raise StoreError(f"retention for {table} must be >= 0 days, got {days}")
        current = _current_ttl_days(store, table)
        if current == days:
            continue
        if days == 0:
            store.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            store.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + toIntervalDay({days}) "
                "SETTINGS materialize_ttl_after_modify = 0"
            )


def _current_ttl_days(store: Store, table: str) -> int:
    rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": table},
    )
    if not rows:
        raise StoreError(f"table {table} does not exist; run migrations first")
    match = re.search(r"TTL .*toIntervalDay\((\d+)\)", rows[0]["engine_full"])
    return int(match.group(1)) if match else 0
