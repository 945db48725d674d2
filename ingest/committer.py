"""Acknowledge spans once a ClickHouse server has them (`ack = "store"`): no local state.

Requests that arrive while an insert is in flight are decoded together and sent as one
asynchronous insert that waits for the server (`wait_for_async_insert`): the server batches the
inserts of every collector into parts, and answers only once the rows are in one. A collector
then holds nothing it has acknowledged: scaling it down, evicting it or losing its node loses
nothing. A retried request is stored once: rows the store already holds are skipped, and each
insert carries a deduplication token made from its rows' keys, for a retry that races the first
try (ingest/writer.py, `store_batch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import pyarrow as pa

from driftline.ingest.mapping import SpanDecoder
from driftline.ingest.metrics import CollectorMetrics
from driftline.ingest.wal import Payload, WalClosed
from driftline.ingest.writer import store_batch
from driftline.store import Store, StoreError

log = logging.getLogger(__name__)

Waiting = tuple[bytes, "Future[None]"]


def confirm_settings(quorum: int | str) -> dict[str, Any]:
    """ClickHouse's settings for an insert confirmed once stored: asynchronous (the server
    batches), waited for, deduplicated by token; through a Distributed table, written to the
    shards before the answer; with `quorum` > 0 (or "auto"), on that many replicas."""
    settings: dict[str, Any] = {
        "async_insert": 1,
        "wait_for_async_insert": 1,
        "async_insert_deduplicate": 1,
        "distributed_foreground_insert": 1,
    }
    if quorum:
        settings["insert_quorum"] = quorum
    return settings


class StoreCommitter:
    """A thread inserting what requests hand it into the store; each request's future is done
    when the server has confirmed its rows, or fails with why (nothing acknowledged)."""

    def __init__(
        self,
        store: Store,
        decoder: SpanDecoder,
        metrics: CollectorMetrics,
        batch_bytes: int,
        confirm: Mapping[str, Any],
    ) -> None:
        self.store, self.decoder, self.metrics = store, decoder, metrics
        self.batch_bytes = batch_bytes
        self.confirm = dict(confirm)
        self.store_healthy = True
        self._waiting: list[Waiting] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="driftline-committer", daemon=True)

    def submit(self, payload: Payload) -> Future[None]:
        """Queue a request's record; done once the store has confirmed its rows."""
        record = payload if isinstance(payload, bytes) else b"".join(payload)
        future: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise WalClosed("the collector is shutting down")
            self._waiting.append((record, future))
            self._cond.notify()
        return future

    def backlog_bytes(self) -> int:
        """Nothing waits on disk: what is not yet stored is not yet acknowledged."""
        return 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Take no more requests; insert those already taken (up to the timeout), fail the rest."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(drain_timeout)
        with self._cond:
            left, self._waiting = self._waiting, []
        for _, future in left:
            future.set_exception(StoreError("the collector stopped before storing this request"))

    def close(self) -> None:
        """Nothing to release: the store is closed by its owner."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return
                group = self._take()
            self._commit(group)

    def _take(self) -> list[Waiting]:
        """The oldest waiting requests, up to `batch_bytes` (at least one)."""
        size, count = 0, 0
        for record, _ in self._waiting:
            if count and size + len(record) > self.batch_bytes:
                break
            size += len(record)
            count += 1
        group, self._waiting = self._waiting[:count], self._waiting[count:]
        return group

    def _commit(self, group: list[Waiting]) -> None:
        started = time.perf_counter()
        try:
            store_batch(
                self.store, self.decoder.decode([r for r, _ in group]), self.metrics, self.confirm
            )
        except (StoreError, pa.ArrowException, ValueError) as exc:
            self._failed(group, exc)
            return
        self.store_healthy = True
        for _, future in group:
            future.set_result(None)
        log.debug("stored %d requests in %.3f s", len(group), time.perf_counter() - started)

    def _failed(self, group: list[Waiting], exc: Exception) -> None:
        """The server down: every request fails (its sender retries). Otherwise one request may
        be at fault (a decoder bug, or too big for a query's memory): each is tried alone."""
        if not self.store.ping():
            self.store_healthy = False
            self.metrics.store_errors.inc()
            log.warning("store insert failed; %d requests not acknowledged: %s", len(group), exc)
            for _, future in group:
                future.set_exception(StoreError(f"the store did not take the spans: {exc}"))
            return
        if len(group) == 1:
            log.error("a request's spans could not be stored: %s", exc)
            group[0][1].set_exception(StoreError(f"the spans could not be stored: {exc}"))
            return
        for one in group:
            self._commit([one])
