"""The embedded backend: chDB (ClickHouse in-process) over a data folder."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
from chdb import session as chdb_session

from driftline.store.base import INSERT_SETTINGS, Params, Store, StoreError
from driftline.store.files import private_folder


class EmbeddedStore(Store):
    """chDB allows one session per process; a lock serialises every call to it."""

    def __init__(self, path: Path, database: str = "driftline") -> None:
        private_folder(path)
        self.database = database
        self._lock = threading.Lock()
        self._session = chdb_session.Session(str(path))
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        self.command(f"USE {database}")

    def command(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, params, "Null")

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        result = self._run(sql, params, "ArrowTable")
        return _strings_not_binary(result)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        # chDB's Python() table function reads the local variable named in the SQL.
        rows = data  # noqa: F841
        settings = ", ".join(f"{k} = {v}" for k, v in INSERT_SETTINGS.items())
        self._run(
            f"INSERT INTO {self.database}.{table} ({columns}) SETTINGS {settings} "
            "SELECT * FROM Python(rows)"
        )

    def query_python(self, sql: str, batch: pa.Table, params: Params | None = None) -> pa.Table:
        """Run a SELECT that reads the Arrow table `batch` through `Python(batch)`."""
        # Arrow fields are nullable by default and ClickHouse would read them as Nullable(...);
        # declare the columns that hold no nulls as such.
        batch = batch.cast(
            pa.schema(
                [
                    f.with_nullable(batch.column(i).null_count > 0)
                    for i, f in enumerate(batch.schema)
                ]
            )
        )
        return _strings_not_binary(self._run(sql, params, "ArrowTable"))

    def query_with_values(
        self, sql: str, values: list[str], params: Params | None = None
    ) -> list[dict[str, Any]]:
        table = pa.table({"value": pa.array(values, pa.string())})
        result: list[dict[str, Any]] = self.query_python(
            sql.replace("{values}", "Python(batch)"), table, params
        ).to_pylist()
        return result

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def _run(self, sql: str, params: Params | None = None, fmt: str = "Null") -> pa.Table:
        with self._lock:
            try:
                return self._session.query(sql, fmt, params=_text_params(params))
            except Exception as exc:
                if fmt == "ArrowTable":
                    self._discard_stale_result()
                raise StoreError(str(exc)) from exc

    def _discard_stale_result(self) -> None:
        """After a query fails mid-stream, chDB (4.4) hands its leftover bytes to the next Arrow
        query, which then fails to parse; a throwaway query takes them."""
        with contextlib.suppress(Exception):
            self._session.query("SELECT 1", "ArrowTable")


def _text_params(params: Params | None) -> dict[str, Any]:
    """chDB takes parameters as text: arrays as ClickHouse array literals, strings in the
    Escaped (TSV) format (else a backslash, tab or newline in a value breaks the query)."""
    return {name: _text_param(value) for name, value in (params or {}).items()}


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _text_param(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return _literal(value)
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    return value


def _literal(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _strings_not_binary(table: pa.Table) -> pa.Table:
    """chDB returns FixedString as fixed-size binary; hand it back as text like the server does."""
    for i, field in enumerate(table.schema):
        if pa.types.is_fixed_size_binary(field.type):
            table = table.set_column(
                i, field.name, table.column(i).cast(pa.binary()).cast(pa.string())
            )
    return table
