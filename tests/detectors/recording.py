"""A store that records the SELECTs it runs, so a test or benchmark can plan their reads."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from driftline.store import Store
from driftline.store.base import Params


class RecordingStore(Store):
    """Passes every statement through, keeping the SELECTs so their reads can be planned."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.database = inner, inner.database
        self.selects: list[tuple[str, dict[str, Any]]] = []

    def command(self, sql: str, params: Params | None = None) -> None:
        self.inner.command(sql, params)

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        self.selects.append((sql, dict(params or {})))
        return self.inner.query_arrow(sql, params)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.inner.insert_arrow(table, data)

    def query_with_values(
        self, sql: str, values: list[str], params: Params | None = None
    ) -> list[dict[str, Any]]:
        return self.inner.query_with_values(sql, values, params)

    def close(self) -> None:
        self.inner.close()
