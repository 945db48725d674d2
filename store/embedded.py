"""The embedded backend: chDB (ClickHouse in-process) over a data folder."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa

# chDB allocates with its own jemalloc (the `je_` prefix), which reads JE_MALLOC_CONF once, when
# the library loads. ClickHouse's build keeps freed pages for 5 s: under a steady stream of
# writer batches they pile up (~60 MiB more at the collector's peak in bench/ingest.py). 100 ms,
# returned by jemalloc's own thread, costs no throughput there. An operator's setting wins.
os.environ.setdefault("JE_MALLOC_CONF", "dirty_decay_ms:100,background_thread:true")
from chdb import session as chdb_session

from driftline.store import resident
from driftline.store.base import INSERT_SETTINGS, Params, Store, StoreError
from driftline.store.files import private_folder

MiB = 1024 * 1024
MEMORY_LIMIT_EXCEEDED = "Code: 241."  # ClickHouse's error code, at the head of its message


@dataclass(frozen=True)
class EngineLimits:
    """What the embedded ClickHouse may hold, given to chDB when its session starts.

    ClickHouse's defaults suit a server that owns its machine: caches of up to 5 GiB each, 16
    merge threads, queries bounded only by 90% of RAM. In a collector beside the app they are
    what makes memory grow without bound, so each is set here.
    """

    memory_bytes: int = 1024 * MiB  # every query and merge together (max_server_memory_usage)
    query_memory_bytes: int = 512 * MiB  # one query or insert (max_memory_usage)
    cache_bytes: int = 64 * MiB  # mark, index and query-condition caches, compiled expressions
    background_threads: int = 2  # merges and mutations at once (background_pool_size)
    # Parts below this many bytes (uncompressed) are written in the Compact format, one file:
    # an insert or merge into a Wide part (a file per column) buffers every column at once,
    # ~150 MiB for llm_calls' 60-odd streams. Bigger parts are merged column by column.
    compact_part_bytes: int = 64 * MiB
    # Granules (and merge blocks) of at most this many bytes: a compact part is written, and
    # read by merges, a granule at a time; ClickHouse's 10 MiB made a merge take ~80 MiB.
    granule_bytes: int = MiB

    def startup_args(self) -> dict[str, int]:
        """clickhouse-local's startup settings (chDB takes them in the connection string)."""
        cache, query = self.cache_bytes, self.query_memory_bytes
        return {
            "max_server_memory_usage": self.memory_bytes,
            "max_memory_usage": query,
            # big aggregations and sorts (a migration's backfill) spill to disk before the limit;
            # INSERT ... SELECT writes blocks of at most an eighth of it
            "max_bytes_before_external_group_by": query // 2,
            "max_bytes_before_external_sort": query // 2,
            "min_insert_block_size_bytes": query // 8,
            "mark_cache_size": cache // 2,
            "primary_index_cache_size": cache // 8,
            "index_mark_cache_size": cache // 16,
            "query_condition_cache_size": cache // 16,
            "compiled_expression_cache_size": cache // 8,
            "vector_similarity_index_cache_size": cache // 16,
            "text_index_tokens_cache_size": cache // 64,
            "text_index_header_cache_size": cache // 64,
            "text_index_postings_cache_size": cache // 64,
            "uncompressed_cache_size": 0,
            "index_uncompressed_cache_size": 0,
            "mmap_cache_size": 64,  # files, not bytes
            "background_pool_size": self.background_threads,
            "background_merges_mutations_concurrency_ratio": 1,
        }

    def config_xml(self) -> str:
        """What the connection string cannot carry: MergeTree settings, in a config file."""
        merge_tree = {
            "min_bytes_for_wide_part": self.compact_part_bytes,
            "vertical_merge_algorithm_min_rows_to_activate": 1,
            "index_granularity_bytes": self.granule_bytes,
            "merge_max_block_size_bytes": self.granule_bytes,
        }
        body = "".join(f"<{k}>{v}</{k}>" for k, v in merge_tree.items())
        return f"<clickhouse><merge_tree>{body}</merge_tree></clickhouse>\n"


class EmbeddedStore(Store):
    """chDB allows one session per process; a lock serialises every call to it. `limits`
    bound its memory (the collector's and the commands' stores, from the settings)."""

    def __init__(
        self, path: Path, database: str = "driftline", limits: EngineLimits | None = None
    ) -> None:
        private_folder(path)
        self.database = database
        self.limits = limits
        target = str(path)  # without limits: ClickHouse's own defaults (tools, tests)
        if limits is not None:
            config = path / "driftline-engine.xml"  # written at each start, read by chDB once
            config.write_text(limits.config_xml())
            args = {"config-file": str(config), **limits.startup_args()}
            target = f"file:{path}?{urlencode(args, safe='/')}"
            _arrow_returns_memory()
        self._lock = threading.Lock()
        self._session = chdb_session.Session(target)
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        self.command(f"USE {database}")

    def command(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, params, "Null")

    def query_arrow(self, sql: str, params: Params | None = None) -> pa.Table:
        result = self._run(sql, params, "ArrowTable")
        return _strings_not_binary(result)

    def query_arrow_blocks(
        self, sql: str, each: Callable[[pa.Table], None], params: Params | None = None
    ) -> None:
        """Run a SELECT and hand its result to `each` a block at a time, so that a big result
        is never held whole (nor twice: ClickHouse's copy and Arrow's)."""
        with self._lock:
            try:
                stream = self._session.send_query(sql, "Arrow", params=_text_params(params))
            except Exception as exc:
                raise StoreError(str(exc)) from exc
            with stream:
                while True:
                    try:
                        block = stream.fetch()
                    except Exception as exc:
                        self._discard_stale_result()
                        raise StoreError(str(exc)) from exc
                    if block is None:
                        return
                    each(_strings_not_binary(_arrow_of(block)))

    def insert_arrow(self, table: str, data: pa.Table, settings: Params | None = None) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        # chDB's Python() table function reads the local variable named in the SQL.
        rows = data  # noqa: F841
        chosen = {**INSERT_SETTINGS, **(settings or {})}
        clause = ", ".join(f"{k} = {_literal(v)}" for k, v in chosen.items())
        self._run(
            f"INSERT INTO {self.database}.{table} ({columns}) SETTINGS {clause} "
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

    def release_memory(self) -> None:
        """Hand the memory ClickHouse, Arrow and glibc freed back to the system now, and the
        code pages start-up used (the collector does once started, and the writer when it has
        caught up): chDB's allocator (jemalloc) keeps freed pages for a while."""
        with self._lock, contextlib.suppress(Exception):
            self._session.query("SYSTEM JEMALLOC PURGE", "Null")
        pa.default_memory_pool().release_unused()
        resident.trim_heap()
        resident.drop_code_pages()

    def _run(self, sql: str, params: Params | None = None, fmt: str = "Null") -> pa.Table:
        with self._lock:
            try:
                if fmt != "ArrowTable":
                    return self._session.query(sql, fmt, params=_text_params(params))
                # chDB's own "ArrowTable" imports pandas (~60 MB resident) on every call.
                result = self._session.query(sql, "Arrow", params=_text_params(params))
                if len(result) == 0:
                    return pa.table({})
                return _arrow_of(result)
            except Exception as exc:
                if fmt == "ArrowTable":
                    self._discard_stale_result()
                raise StoreError(str(exc)) from exc

    def _discard_stale_result(self) -> None:
        """After a query fails mid-stream, chDB (4.4) hands its leftover bytes to the next Arrow
        query, which then fails to parse; a throwaway query takes them."""
        with contextlib.suppress(Exception):
            self._session.query("SELECT 1", "Arrow")


def _arrow_returns_memory() -> None:
    """Arrow's allocations from its jemalloc with no decay: freed pages go back at once. Its
    default (mimalloc) keeps them, ~60 MiB after each writer batch on top of chDB's own."""
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)


def _arrow_of(result: Any) -> pa.Table:
    """A chDB result in the Arrow format, as a table over its bytes (no copy)."""
    return pa.ipc.open_file(result.get_memview().view()).read_all()


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
