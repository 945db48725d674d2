"""The storage interface every backend implements: run statements, query, insert Arrow tables."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

Params = Mapping[str, Any]

# Rows arrive deduplicated by the writer, so ReplacingMergeTree need not collapse each inserted
# block again (`optimize_on_insert` would; it doubles the cost of an insert). A batch of spans
# may span many months (late or backfilled data): no cap on partitions per insert.
INSERT_SETTINGS = {"optimize_on_insert": 0, "max_partitions_per_insert_block": 0}


class StoreError(RuntimeError):
    """A statement failed, or the store cannot be reached."""


class Store(abc.ABC):
    """One ClickHouse database. The same SQL runs on every backend."""

    database: str

    @abc.abstractmethod
    def command(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT)."""

    @abc.abstractmethod
    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        """Run a SELECT and return its result as an Arrow table."""

    @abc.abstractmethod
    def insert_arrow(self, table: str, data: pa.Table, settings: Params | None = None) -> None:
        """Insert an Arrow table whose column names match the target table's, with `settings`
        (ClickHouse's, for this insert) beside the usual ones."""

    @abc.abstractmethod
    def query_with_values(
        self, sql: str, values: list[str], params: Params | None = None
    ) -> list[dict[str, Any]]:
        """Run a SELECT whose `{values}` placeholder is a one-column table (`value String`).

        For lists too long to inline in SQL (embedded: an Arrow table; server: external data).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection or the embedded engine."""

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return rows as dicts."""
        return self.query_arrow(sql, params).to_pylist()

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        try:
            self.query_arrow("SELECT 1 AS ok")
        except Exception:
            return False
        return True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
