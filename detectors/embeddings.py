"""Embed each stored LLM call's prompt and response once, and read the vectors back.

New calls are picked up by an anti-join against `call_embeddings`, so the job is idempotent
and late-arriving calls (an SDK spool delivered hours later) are embedded like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from driftline.detectors.embedder import Embedder
from driftline.store import Store

# Operations whose output is text worth comparing; embeddings calls have no answer to embed.
TEXT_OPERATIONS = ("chat", "text_completion", "generate_content")

_PENDING = """
SELECT c.project_id AS project_id, c.trace_id AS trace_id, c.span_id AS span_id,
       c.start_time AS start_time, c.input_text AS prompt, c.output_text AS response
FROM llm_calls AS c FINAL
LEFT ANTI JOIN (
    SELECT project_id, trace_id, span_id FROM call_embeddings WHERE model = {model:String}
) AS e ON c.project_id = e.project_id AND c.trace_id = e.trace_id AND c.span_id = e.span_id
WHERE c.operation IN {operations:Array(String)} AND c.output_text != ''
ORDER BY c.start_time
LIMIT {limit:UInt32}
"""


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


class EmbeddingJob:
    """Finds calls without embeddings for the embedder's model and stores theirs."""

    def __init__(self, store: Store, embedder: Embedder, batch: int = 512) -> None:
        self.store = store
        self.embedder = embedder
        self.batch = batch

    def pending(self) -> int:
        rows = self.store.query(
            f"SELECT count() AS n FROM ({_PENDING.replace('LIMIT {limit:UInt32}', '')})",
            {"model": self.embedder.name, "operations": list(TEXT_OPERATIONS)},
        )
        return int(rows[0]["n"])

    def run_once(self) -> int:
        """Embed up to one batch of pending calls; return how many were embedded."""
        calls = self.store.query_arrow(
            _PENDING,
            {
                "model": self.embedder.name,
                "operations": list(TEXT_OPERATIONS),
                "limit": self.batch,
            },
        )
        if calls.num_rows == 0:
            return 0
        prompts = self.embedder.encode(calls.column("prompt").to_pylist())
        responses = self.embedder.encode(calls.column("response").to_pylist())
        self.store.insert_arrow(
            "call_embeddings",
            pa.table(
                {
                    "project_id": calls.column("project_id"),
                    "trace_id": calls.column("trace_id"),
                    "span_id": calls.column("span_id"),
                    "start_time": calls.column("start_time"),
                    "model": pa.array([self.embedder.name] * calls.num_rows),
                    "prompt_vector": _vectors(prompts),
                    "response_vector": _vectors(responses),
                }
            ),
        )
        return calls.num_rows

    def backfill(
        self, progress: Callable[[int], None] | None = None, max_batches: int | None = None
    ) -> int:
        """Embed pending calls (all, or `max_batches` batches); `progress` gets each count."""
        total = batches = 0
        while (max_batches is None or batches < max_batches) and (done := self.run_once()):
            total += done
            batches += 1
            if progress is not None:
                progress(done)
        return total


_FIELDS = (
    "trace_id", "span_id", "duration_ms", "output_tokens", "total_tokens", "cost_usd",
    "error_type", "status_code", "finish_reasons", "input_text", "output_text", "service",
    "response_model", "agent_name",
)  # fmt: skip
CALL_COLUMNS = ", ".join(
    [f"c.{name} AS {name}" for name in _FIELDS]
    + ["toUnixTimestamp64Nano(c.start_time) AS start_ns"]
)


def load_calls(
    store: Store,
    model: str,
    where: str,
    params: dict[str, Any],
    limit: int | None = None,
) -> Calls:
    """Embedded calls matching `where` (SQL over llm_calls `c`), oldest first."""
    table = store.query_arrow(
        f"SELECT {CALL_COLUMNS}, e.prompt_vector AS prompt_vector, "
        "e.response_vector AS response_vector "
        "FROM llm_calls AS c FINAL INNER JOIN (SELECT * FROM call_embeddings FINAL "
        "WHERE model = {model:String}) AS e "
        "ON c.project_id = e.project_id AND c.trace_id = e.trace_id AND c.span_id = e.span_id "
        f"WHERE {where} ORDER BY c.start_time, c.trace_id, c.span_id"
        + (f" LIMIT {int(limit)}" if limit else ""),
        {**params, "model": model},
    )
    prompts, responses = _matrix(table, "prompt_vector"), _matrix(table, "response_vector")
    return Calls(table.drop_columns(["prompt_vector", "response_vector"]), prompts, responses)


def _vectors(matrix: np.ndarray) -> pa.Array:
    flat = pa.array(matrix.astype(np.float32, copy=False).ravel(), pa.float32())
    offsets = pa.array(np.arange(0, flat.__len__() + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def _matrix(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    # A copy: Arrow's buffers are read-only, and torch wants to own what it wraps.
    flat = np.array(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(values), -1)
