"""Rows for insertion, shaped by a table's Arrow schema: the one place in Python where the
columns driftline inserts, and their types, are written. Each room's tables module has a
schema per table it writes (`SCHEMAS`); tests/layout checks each against the migrated table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

NS = pa.timestamp("ns", "UTC")  # DateTime64(9, 'UTC')
MS = pa.timestamp("ms", "UTC")  # DateTime64(3, 'UTC')


def text_map(value: pa.DataType | None = None) -> pa.DataType:
    """A Map(LowCardinality(String), ...) column (values text unless given)."""
    return pa.map_(pa.string(), value or pa.string())


def table_of(schema: pa.Schema, columns: Mapping[str, Any]) -> pa.Table:
    """`columns` (name → values) cast to `schema`; a column the schema lacks, or one it has
    and `columns` does not, is an error."""
    unknown = sorted(set(columns) - set(schema.names))
    missing = sorted(set(schema.names) - set(columns))
    if unknown or missing:
        raise ValueError(f"columns not in the schema: {unknown}; missing: {missing}")
    return pa.table(dict(columns), schema=schema)


def strings_not_binary(table: pa.Table) -> pa.Table:
    """FixedString columns as text: ClickHouse's Arrow output makes them fixed-size binary (the
    server's and chDB's alike), and driftline's (hashes, ids) are text."""
    for i, field in enumerate(table.schema):
        if pa.types.is_fixed_size_binary(field.type):
            table = table.set_column(
                i, field.name, table.column(i).cast(pa.binary()).cast(pa.string())
            )
    return table
