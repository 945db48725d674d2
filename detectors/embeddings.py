"""Embed each stored LLM call's prompt and response once, and read the vectors back.

What to embed is found by a watermark, not by comparing tables: calls are taken in the order
they were ingested (`llm_calls.ingested_at`, skipped granule by granule by a minmax index), from
a cursor stored per model in `embedding_watermarks`. A call that arrives late (an SDK spool
delivered hours after the call) has a new `ingested_at`, so it is embedded like any other, once,
as long as it started within `lookback_seconds` of the cursor; the start-time bound is what keeps
the read on the sorting key whatever the history.

Backlog policy: while the oldest waiting call arrived less than `max_lag_seconds` ago, calls are
embedded in arrival order, every one. Past that, the next batch is a uniform sample (by a hash of
the call's ids) of everything waiting, and the cursor jumps over the rest, which is counted as
skipped. So under sustained overload the lag stays bounded and each period of traffic is
represented by a uniform sample of its calls; windows are tested on those samples and flags
cover what was embedded.

A call's vectors are stored with its scope columns and the fields the flags read, so a window is
one range read of `call_vectors` on (project_id, model, start_time); only its texts come from
`llm_calls`, read within the window's own time span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from driftline.detectors import tables
from driftline.ingest.tables import arrivals, selected, texts_of
from driftline.store import Store
from driftline.store.sql import Relation, bind

if TYPE_CHECKING:
    from driftline.detectors.metrics import DetectorMetrics

# Operations whose output is text worth comparing; embeddings calls have no answer to embed.
TEXT_OPERATIONS = ("chat", "text_completion", "generate_content")


# The call fields a window carries beside its vectors (copied onto the vector row).
WINDOW_FIELDS = (
    "service", "service_version", "response_model", "agent_name", "duration_ms",
    "output_tokens", "cost_usd", "error_type", "finish_reasons",
)  # fmt: skip
_TEXTS = ("input_text", "output_text")
_IDLE_SAVE_MS = 60_000
_NS_PER_MS = 1_000_000
# What embedding a call reads of it.
_CALL_COLUMNS = ", ".join(
    [f"c.{name} AS {name}" for name in ("project_id", "trace_id", "span_id", "start_time")]
    + [f"c.{name} AS {name}" for name in (*WINDOW_FIELDS, *_TEXTS)]
)


class TextEmbedder(Protocol):
    """What the detectors need of an embedding model."""

    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Calls:
    """Calls with their embeddings, oldest first: row i of `columns`, `prompts`, `responses`."""

    columns: pa.Table
    prompts: np.ndarray
    responses: np.ndarray

    def __len__(self) -> int:
        return self.columns.num_rows

    def column(self, name: str) -> list[Any]:
        return list(self.columns.column(name).to_pylist())


@dataclass(frozen=True)
class Cursor:
    """Every call ingested before `ingested_ms` is done, and at `ingested_ms` every call up to
    the key (project, trace, span); an empty key means all of that millisecond."""

    ingested_ms: int
    key: tuple[str, str, str] = ("", "", "")

    def arrivals(self, columns: str, upto_ms: int, lookback_ms: int) -> Relation:
        """What arrived after this position by `upto_ms`, and started at most `lookback_ms`
        before it."""
        since_ns = (self.ingested_ms - lookback_ms) * _NS_PER_MS
        return arrivals(
            columns, self.ingested_ms * _NS_PER_MS, self.key, upto_ms * _NS_PER_MS, since_ns,
            TEXT_OPERATIONS,
        )  # fmt: skip


@dataclass(frozen=True)
class Backlog:
    """Calls waiting for the embedder: how many, and when the oldest arrived."""

    calls: int
    oldest_ms: int
    upto_ms: int

    def lag_seconds(self, now_ms: int) -> float:
        return max(now_ms - self.oldest_ms, 0) / 1000 if self.calls else 0.0


@dataclass(frozen=True)
class BatchOutcome:
    embedded: int
    skipped: int
    lag_seconds: float
    pending: int


class EmbeddingJob:
    """Embeds new calls for one model, a batch at a time, from its watermark."""

    def __init__(
        self,
        store: Store,
        embedder: TextEmbedder,
        batch: int = 512,
        *,
        lookback_seconds: float = 7 * 86_400,
        max_lag_seconds: float = 300.0,
        settle_seconds: float = 5.0,
        metrics: DetectorMetrics | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.batch = batch
        self.lookback_ms = int(lookback_seconds * 1000)
        self.max_lag_seconds = max_lag_seconds
        self.settle_ms = int(settle_seconds * 1000)
        self.metrics = metrics

    # -- the watermark ---------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        """Where the model has got to; a model seen for the first time starts a look-back ago."""
        row = self._watermark()
        if row is None:
            return Cursor(self._now_ms() - self.lookback_ms)
        return Cursor(
            int(row["ms"]), (row["cursor_project"], row["cursor_trace"], row["cursor_span"])
        )

    def horizon_ns(self) -> int | None:
        """Calls that started before this are embedded (or sampled out); None: nothing yet."""
        row = self._watermark()
        return int(row["ms"]) * 1_000_000 if row is not None else None

    def _watermark(self) -> dict[str, Any] | None:
        return tables.watermark(self.store, self.embedder.name)

    def _save(self, cursor: Cursor, embedded: int, skipped: int) -> None:
        tables.insert(
            self.store,
            "embedding_watermarks",
            {
                "model": [self.embedder.name],
                "ingested_upto": [cursor.ingested_ms],
                "cursor_project": [cursor.key[0]],
                "cursor_trace": [cursor.key[1]],
                "cursor_span": [cursor.key[2]],
                "embedded": [embedded],
                "skipped": [skipped],
            },
        )

    # -- what is waiting -------------------------------------------------------------------------

    def backlog(self, cursor: Cursor | None = None) -> Backlog:
        cursor = cursor or self.cursor()
        upto = self._now_ms() - self.settle_ms
        waiting = cursor.arrivals("c.project_id", upto, self.lookback_ms)
        rows = self.store.query(
            f"SELECT count() AS n, intDiv(min(ingested_ns), {_NS_PER_MS}) AS oldest FROM {waiting}",
            waiting.params,
        )
        return Backlog(int(rows[0]["n"]), int(rows[0]["oldest"] or 0), upto)

    def pending(self) -> int:
        return self.backlog().calls

    # -- one batch -------------------------------------------------------------------------------

    def run_once(self) -> BatchOutcome:
        """Embed one batch: the oldest waiting calls, or a uniform sample of them all when the
        oldest has waited longer than `max_lag_seconds` (the rest are skipped)."""
        cursor = self.cursor()
        backlog = self.backlog(cursor)
        lag = backlog.lag_seconds(backlog.upto_ms + self.settle_ms)
        if backlog.calls == 0:
            # Caught up: move the cursor to now now and then, so it never rests on a key (a
            # key makes the next read include that whole millisecond's insert).
            if any(cursor.key) or backlog.upto_ms - cursor.ingested_ms > _IDLE_SAVE_MS:
                self._save(Cursor(backlog.upto_ms), 0, 0)
            self._observe(0, 0.0, 0)
            return BatchOutcome(0, 0, 0.0, 0)
        sampling = lag > self.max_lag_seconds and backlog.calls > self.batch
        order = (
            "cityHash64(trace_id, span_id)"
            if sampling
            else "ingested_ns, project_id, trace_id, span_id"
        )
        waiting = cursor.arrivals(_CALL_COLUMNS, backlog.upto_ms, self.lookback_ms)
        calls = self.store.query_arrow(
            f"SELECT * FROM {waiting} ORDER BY {order} LIMIT {{limit:UInt32}}",
            bind(waiting, {"limit": self.batch}),
        )
        if sampling or calls.num_rows < self.batch or calls.num_rows >= backlog.calls:
            after = Cursor(backlog.upto_ms)  # all of it: embedded, or sampled out
        else:
            last = calls.slice(calls.num_rows - 1).to_pylist()[0]
            after = Cursor(
                int(last["ingested_ns"]) // _NS_PER_MS,
                (last["project_id"], last["trace_id"], last["span_id"]),
            )
        embedded = self.embed(calls)
        skipped = backlog.calls - calls.num_rows if sampling else 0
        self._save(after, embedded, skipped)
        self._observe(skipped, lag, backlog.calls - calls.num_rows - skipped)
        return BatchOutcome(embedded, skipped, lag, backlog.calls - calls.num_rows - skipped)

    def embed(self, calls: pa.Table) -> int:
        """Store the vectors of `calls` (llm_calls columns) not yet embedded by this model."""
        calls = self._not_embedded(calls)
        if calls.num_rows == 0:
            return 0
        prompts = self.embedder.encode(calls.column("input_text").to_pylist())
        responses = self.embedder.encode(calls.column("output_text").to_pylist())
        columns = {name: calls.column(name) for name in ("project_id", "trace_id", "span_id")}
        if self.metrics is not None:  # every embedding counts, a reference's too
            self.metrics.embedded.inc(calls.num_rows)
        tables.insert(
            self.store,
            "call_vectors",
            {
                **columns,
                "model": [self.embedder.name] * calls.num_rows,
                "start_time": calls.column("start_time"),
                **{name: calls.column(name) for name in WINDOW_FIELDS},
                "prompt_vector": quantize(prompts),
                "response_vector": quantize(responses),
            },
        )
        return calls.num_rows

    def embed_where(
        self,
        project: str,
        where: str,
        params: dict[str, Any],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed the calls of `project` matching `where` (SQL on llm_calls `c`, bounding
        `c.start_time`) that this model has no vectors for: a reference's, for one."""
        found = selected(project, _CALL_COLUMNS, "notEmpty(c.output_text) AND " + where, params)
        calls = self.store.query_arrow(f"SELECT * FROM {found}", found.params)
        total = 0
        for start in range(0, calls.num_rows, self.batch):
            total += self.embed(calls.slice(start, self.batch))
            if progress is not None:
                progress(min(self.batch, calls.num_rows - start))
        return total

    def _not_embedded(self, calls: pa.Table) -> pa.Table:
        """`calls` less duplicates and calls this model has vectors for (a batch repeated after a
        crash between storing vectors and moving the cursor); reads only the batch's time span."""
        if calls.num_rows == 0:
            return calls
        keys = call_keys(calls)
        starts = calls.column("start_time").cast(pa.int64()).to_numpy()
        done = tables.embedded_keys(
            self.store,
            self.embedder.name,
            sorted(set(calls.column("project_id").to_pylist())),
            int(starts.min()),
            int(starts.max()),
            keys,
        )
        projects = calls.column("project_id").to_pylist()
        keep, seen = [], set()
        for i, key in enumerate(keys):
            if key not in done and (projects[i], key) not in seen:
                seen.add((projects[i], key))
                keep.append(i)
        return calls if len(keep) == calls.num_rows else calls.take(pa.array(keep, pa.int64()))

    def _observe(self, skipped: int, lag: float, waiting: int) -> None:
        if self.metrics is not None:
            self.metrics.observe_embedding(skipped, lag, waiting)

    def backfill(
        self, progress: Callable[[int], None] | None = None, max_batches: int | None = None
    ) -> int:
        """Embed waiting calls (all, or `max_batches` batches); `progress` gets each count."""
        total = batches = 0
        while max_batches is None or batches < max_batches:
            outcome = self.run_once()
            done = outcome.embedded + outcome.skipped
            if outcome.pending == 0 and done == 0:
                break
            total += outcome.embedded
            batches += 1
            if progress is not None:
                progress(done)
            if outcome.pending == 0:
                break
        return total

    def _now_ms(self) -> int:
        """The store's clock: it stamps `ingested_at`, so the cursor is compared with its time."""
        return int(self.store.query("SELECT toUnixTimestamp64Milli(now64(3)) AS ms")[0]["ms"])


# -- reading vectors back --------------------------------------------------------------------------

_VECTOR_COLUMNS = ", ".join(
    [f"c.{name} AS {name}" for name in ("trace_id", "span_id", *WINDOW_FIELDS)]
    + [
        "toUnixTimestamp64Nano(c.start_time) AS start_ns",
        "c.prompt_vector AS prompt_vector",
        "c.response_vector AS response_vector",
    ]
)


def load_calls(
    store: Store,
    project: str,
    model: str,
    where: str,
    params: dict[str, Any],
    *,
    limit: int | None = None,
    order: str = "c.start_time, c.trace_id, c.span_id",
) -> Calls:
    """Embedded calls of `project` matching `where` (SQL over call_vectors `c`, which must bound
    `c.start_time`), oldest first, with their texts."""
    table = tables.vectors(store, project, model, _VECTOR_COLUMNS, where, params, order, limit)
    if order != "c.start_time, c.trace_id, c.span_id":
        table = table.sort_by([("start_ns", "ascending"), ("trace_id", "ascending")])
    table = _with_texts(store, project, table)
    prompts, responses = dequantize(table, "prompt_vector"), dequantize(table, "response_vector")
    return Calls(table.drop_columns(["prompt_vector", "response_vector"]), prompts, responses)


def _with_texts(store: Store, project: str, table: pa.Table) -> pa.Table:
    """`table` with the calls' prompt and answer, read from llm_calls within its time span."""
    empty = pa.array([], pa.string())
    if table.num_rows == 0:
        return table.append_column("input_text", empty).append_column("output_text", empty)
    keys = call_keys(table)
    starts = table.column("start_ns").to_numpy()
    texts = texts_of(store, project, keys, int(starts.min()), int(starts.max()))
    found = [texts.get(k, ("", "")) for k in keys]
    for i, name in enumerate(_TEXTS):
        table = table.append_column(name, pa.array([f[i] for f in found], pa.string()))
    return table


def call_keys(table: pa.Table) -> list[str]:
    """trace_id + span_id of each row: fixed widths, so one string names a call in a project."""
    traces, spans = table.column("trace_id").to_pylist(), table.column("span_id").to_pylist()
    return [t + s for t, s in zip(traces, spans, strict=True)]


def quantize(matrix: np.ndarray) -> pa.Array:
    """Rows as int8 lists, each scaled so its largest component is ±127 (direction kept)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    peak = np.abs(matrix).max(axis=1, keepdims=True) if matrix.size else np.ones((0, 1))
    scaled = np.rint(matrix / np.where(peak == 0, 1, peak) * 127).astype(np.int8)
    flat = pa.array(scaled.ravel(), pa.int8())
    offsets = pa.array(np.arange(0, scaled.size + 1, max(matrix.shape[1], 1), dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def dequantize(table: pa.Table, column: str) -> np.ndarray:
    """The unit-length float32 rows of an int8 vector column."""
    values = table.column(column).combine_chunks()
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    matrix = flat.reshape(len(values), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)
