"""The server backend: a ClickHouse server or cluster through clickhouse-connect."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.external import ExternalData

from driftline.store.arrow import strings_not_binary
from driftline.store.base import INSERT_SETTINGS, Params, Store, StoreError


class ServerStore(Store):
    """Talks HTTP to ClickHouse; the URL's path names the database (default `driftline`)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(
                f"clickhouse url must look like http://user:pass@host:8123/db, got {url!r}"
            )
        self.database = parsed.path.strip("/") or "driftline"
        self._local = threading.local()
        self._connect_args: dict[str, Any] = {
            "host": parsed.hostname,
            "port": parsed.port or (8443 if parsed.scheme == "https" else 8123),
            "username": unquote(parsed.username or "default"),
            "password": unquote(parsed.password or ""),
            "secure": parsed.scheme == "https",
        }
        try:
            bootstrap = clickhouse_connect.get_client(**self._connect_args)
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            bootstrap.close()
        except Exception as exc:
            raise StoreError(f"cannot reach ClickHouse at {parsed.hostname}: {exc}") from exc

    def _client(self) -> Client:
        # clickhouse-connect clients are not thread-safe; keep one per thread.
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = clickhouse_connect.get_client(database=self.database, **self._connect_args)
            self._local.client = client
        return client

    def command(self, sql: str, params: Params | None = None) -> None:
        try:
            self._client().command(sql, parameters=dict(params or {}))
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        try:
            table = self._client().query_arrow(sql, parameters=dict(params or {}), use_strings=True)
        except Exception as exc:
            raise StoreError(str(exc)) from exc
        return strings_not_binary(table)

    def insert_arrow(self, table: str, data: pa.Table, settings: Params | None = None) -> None:
        try:
            self._client().insert_arrow(
                table,
                data,
                database=self.database,
                settings={**INSERT_SETTINGS, **(settings or {})},
            )
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def query_with_values(
        self, sql: str, values: list[str], params: Params | None = None
    ) -> list[dict[str, Any]]:
        external = ExternalData(
            file_name="driftline_values",
            data="\n".join(values).encode(),
            structure="value String",
            fmt="TabSeparated",
        )
        try:
            # Arrow, as query_arrow: Native rows would hold FixedString columns as bytes.
            table = self._client().query_arrow(
                sql.replace("{values}", "driftline_values"),
                parameters=dict(params or {}),
                use_strings=True,
                external_data=external,
            )
        except Exception as exc:
            raise StoreError(str(exc)) from exc
        rows: list[dict[str, Any]] = strings_not_binary(table).to_pylist()
        return rows

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
