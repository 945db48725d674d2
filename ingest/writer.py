"""The writer: drains the write-ahead log into the store in batches, never twice.

A batch is committed in the log only after the store has it. A crash in between replays the
batch; rows whose (trace_id, span_id) the store already has are skipped, so nothing is doubled.

Memory follows the batch: decoding `batch_bytes` of records takes several times that in
ClickHouse and Arrow. A batch that passes the engine's per-query memory limit is not retried as
it is: the writer halves its batch until one fits, then grows it back.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from concurrent.futures import Future

import pyarrow as pa
import pyarrow.compute as pc

from driftline.ingest import tables
from driftline.ingest.mapping import MappedBatch, SpanDecoder
from driftline.ingest.metrics import CollectorMetrics
from driftline.ingest.wal import Payload, Position, Record, WriteAheadLog, write_durably
from driftline.store import Store, StoreError, resident
from driftline.store.base import Params
from driftline.store.embedded import MEMORY_LIMIT_EXCEEDED

log = logging.getLogger(__name__)


class TooLarge(Exception):
    """A batch passes the store's memory limit, for one query or for all at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.per_query = "query memory limit" in message.lower()


def _memory_limit(exc: Exception) -> bool:
    return MEMORY_LIMIT_EXCEEDED in str(exc)


class Writer:
    """A background thread moving acknowledged spans from the log into the store."""

    def __init__(
        self,
        wal: WriteAheadLog,
        store: Store,
        decoder: SpanDecoder,
        metrics: CollectorMetrics,
        batch_bytes: int,
        flush_interval: float,
    ) -> None:
        self.wal, self.store, self.decoder, self.metrics = wal, store, decoder, metrics
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self._batch_limit = batch_bytes  # lower while batches pass the engine's memory limit
        self.store_healthy = True
        self._drain_deadline = float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Store what is left in the log (up to the timeout), then stop."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        position = self.wal.checkpoint
        while True:
            stopping = self._stop.is_set()
            if stopping and (
                self.wal.backlog_bytes() == 0 or time.monotonic() > self._drain_deadline
            ):
                return
            try:
                position = self._step(position, stopping)
            except Exception:  # never let the writer die silently: /readyz shows it, we retry
                self.store_healthy = False
                log.exception("writer failed; retrying the same records")
                if stopping and time.monotonic() > self._drain_deadline:
                    return
                self._stop.wait(1.0)

    def _step(self, position: Position, stopping: bool) -> Position:
        """Store the next run of records after `position`; return where the log now stands."""
        if not self.wal.wait_for_data(position, timeout=0.2):
            return position
        if not stopping and self.wal.backlog_bytes() < self.batch_bytes:
            self._stop.wait(self.flush_interval)  # let a small batch grow a little
        records = self.wal.read(position, self._batch_limit)
        if not records:
            self._stop.wait(0.2)  # nothing readable yet past `position`: do not spin
            return position
        try:
            if not self._store(self._decode(records)):
                return position  # stopping while the store is down: the log keeps the batch
        except TooLarge as exc:
            if len(records) > 1:  # smaller each time, down to one record
                read = sum(len(r.payload) for r in records)
                self._batch_limit = max(1, min(self._batch_limit, read) // 2)
                log.warning("a batch of %d records passes the store's memory limit; trying "
                            "%d bytes at a time", len(records), self._batch_limit)  # fmt: skip
                return position
            if not exc.per_query:
                raise  # other queries hold the memory: the same record, after a pause
            self._dead_letter(records[0], exc)  # alone past store_query_memory_bytes: never fits
        self.wal.commit(records[-1].end)
        self._batch_limit = min(self.batch_bytes, self._batch_limit * 2)
        if self.wal.backlog_bytes() == 0:  # caught up: give back what the batches freed
            self.decoder.engine.release_memory()
        else:
            resident.drop_code_pages()
        return records[-1].end

    def _decode(self, records: list[Record]) -> MappedBatch:
        """Decode a run of records; a record that cannot be decoded is set aside, loudly.

        Records were checked at ingest, so a failure here means a decoder bug meeting unusual
        data. Keeping the writer stuck on it would stop every later span; instead the record is
        decoded alone to find it, written to `dead-letter/` and counted in the metrics.
        """
        try:
            return self.decoder.decode([r.payload for r in records])
        except (StoreError, pa.ArrowException, ValueError) as exc:
            if _memory_limit(exc):
                raise TooLarge(str(exc)) from exc
            if not self.decoder.engine.ping():
                raise
            log.error("a batch of %d records failed to decode (%s); isolating", len(records), exc)
        good = []
        for record in records:
            try:
                self.decoder.decode([record.payload])
                good.append(record.payload)
            except (StoreError, pa.ArrowException, ValueError) as exc:
                self._dead_letter(record, exc)
        return self.decoder.decode(good) if good else MappedBatch.empty()

    def _dead_letter(self, record: Record, exc: Exception) -> None:
        folder = self.wal.directory.parent / "dead-letter"
        folder.mkdir(exist_ok=True)
        path = folder / f"{record.end.segment:012d}-{record.end.offset:012d}.otlp"
        write_durably(path, record.payload)  # before the log lets the record go
        self.metrics.dead_letters.inc()
        log.error("record ending at %s cannot be decoded and was moved to %s: %s",
                  record.end, path, exc)  # fmt: skip

    def _store(self, batch: MappedBatch) -> bool:
        delay = 0.1
        while True:
            try:
                self.write(batch)
                self.store_healthy = True
                return True
            except StoreError as exc:
                if _memory_limit(exc):
                    raise TooLarge(str(exc)) from exc
                self.store_healthy = False
                self.metrics.store_errors.inc()
                log.warning("store write failed, retrying in %.1fs: %s", delay, exc)
                if self._stop.is_set() and time.monotonic() > self._drain_deadline:
                    return False
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    def write(self, batch: MappedBatch) -> None:
        """Insert the batch's rows the store does not hold yet."""
        store_batch(self.store, batch, self.metrics)

    # What app.py and the routes see of every span writer (ingest/committer.py is the other).
    def submit(self, payload: Payload) -> Future[None]:
        """Queue a request's record; done once it is durable in the log."""
        return self.wal.submit(payload)

    def backlog_bytes(self) -> int:
        return self.wal.backlog_bytes()

    def close(self) -> None:
        """Close the log (after `stop`)."""
        self.wal.close()


def store_batch(
    store: Store, batch: MappedBatch, metrics: CollectorMetrics, confirm: Params | None = None
) -> None:
    """Insert the batch's rows the store does not hold yet.

    `confirm`: the settings under which a server confirms an insert (ack = "store"); each insert
    then also carries a deduplication token made from its rows' keys, so the same rows sent
    again (a retry racing the first try) are stored once.
    """
    metrics.duplicates.inc(batch.duplicates)
    for name, table in (("llm_calls", batch.llm_calls), ("spans", batch.spans)):
        if table.num_rows == 0:
            continue
        started = time.perf_counter()
        known = tables.existing_keys(store, name, table)
        if known:
            metrics.duplicates.inc(len(known))
            table = table.filter(pc.invert(pc.is_in(tables.keys_of(table), pa.array(list(known)))))
        if table.num_rows:
            settings = None
            if confirm is not None:
                settings = {
                    **confirm,
                    "insert_deduplication_token": deduplication_token(name, table),
                }
            store.insert_arrow(name, table, settings)
        metrics.store_write_seconds.labels(name).observe(time.perf_counter() - started)
        metrics.store_rows.labels(name).inc(table.num_rows)
        if name == "llm_calls":
            metrics.observe_llm_calls(table)


def deduplication_token(table: str, rows: pa.Table) -> str:
    """The same for the same rows of `table`, in any order."""
    digest = hashlib.sha256(table.encode())
    for key in sorted(tables.keys_of(rows).to_pylist()):
        digest.update(b"\0" + key.encode())
    return digest.hexdigest()
