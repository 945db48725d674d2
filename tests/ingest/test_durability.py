"""`kill -9` at any moment loses nothing acknowledged and stores nothing twice."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from driftline.store import migrate, open_store
from tests.conftest import start_server, stop_server
from tests.factory import PROTOBUF, auth, genai_attrs, request, span


def _sender(url: str, key: str, stop: threading.Event, acked: list[tuple[str, str]]) -> None:
    """Post batches until told to stop or the server dies; record the spans acknowledged."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            spans = [span(genai_attrs(prompt=f"question {random.random()}")) for _ in range(50)]
            body = request(spans).SerializeToString()
            try:
                response = client.post(
                    f"{url}/v1/traces", content=body, headers={**PROTOBUF, **auth(key)}
                )
            except httpx.HTTPError:
                return  # the server was killed mid-request: that batch was never acknowledged
            if response.status_code == 200:
                acked.extend((s.trace_id.hex(), s.span_id.hex()) for s in spans)


def _tables_without_merges(data: Path) -> None:
    """The server's tables, made before its first start, with merges off on llm_calls: a
    ReplacingMergeTree merge collapses the rows of one key, so a span stored twice would be
    counted once. The setting is kept in the table's definition, so every restart keeps it."""
    store = open_store(data)
    try:
        migrate(store)
        # A merge takes at least two parts; allowing one at a time allows none.
        store.command("ALTER TABLE llm_calls MODIFY SETTING max_parts_to_merge_at_once = 1")
    finally:
        store.close()


@pytest.mark.timeout(240)
def test_kill_9_loses_nothing_acknowledged_and_stores_nothing_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: list[tuple[str, str]] = []
    _tables_without_merges(data)
    server = start_server(data)
    ingest_key = server.ingest_key
    rng = random.Random(4)
    for _ in range(3):
        stop = threading.Event()
        threads = [
            threading.Thread(target=_sender, args=(server.url, ingest_key, stop, acked))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.8, 2.5))  # mid-stream: requests in flight, writer mid-batch
        stop_server(server, kill=True)
        stop.set()
        for t in threads:
            t.join()
        server = start_server(data, port=int(server.url.rsplit(":", 1)[1]))
    # let the restarted server replay its log, then stop it cleanly and look at the store itself
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if "driftline_wal_backlog_bytes 0.0" in metrics:
            break
        time.sleep(0.2)
    stop_server(server)

    assert len(acked) > 500, "the senders should have been acknowledged many spans"
    store = open_store(data)
    try:
        rows = store.query("SELECT trace_id, span_id FROM llm_calls")  # no FINAL: physical rows
        # A merged part spans several inserts' block numbers.
        parts = store.query(
            "SELECT countIf(min_block_number != max_block_number) AS merged FROM system.parts "
            "WHERE database = currentDatabase() AND table = 'llm_calls' AND active"
        )
    finally:
        store.close()
    assert parts[0]["merged"] == 0, "a merge ran, and may have collapsed a span stored twice"
    stored = [(r["trace_id"], r["span_id"]) for r in rows]
    extra = len(stored) - len(set(stored))
    assert not extra, f"{extra} extra copies of spans were stored"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged spans were lost"
