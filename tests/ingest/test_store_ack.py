"""ack = "store": a span export is acknowledged once the ClickHouse server has its rows, and the
collector keeps nothing of it. Run on the server backend against the stand-in for a ClickHouse
server (tests/clickhouse_http.py), and on a real server when DRIFTLINE_CLICKHOUSE_URL is set."""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import pytest
from fastapi.testclient import TestClient

from driftline.api.app import build_runtime, create_app
from driftline.api.runtime import Runtime
from driftline.ingest import envelope, otlp
from driftline.ingest.committer import StoreCommitter, confirm_settings
from driftline.ingest.writer import store_batch
from driftline.store import Store, keys, migrate, open_store
from tests import clickhouse_http
from tests.conftest import make_settings, start_server, stop_server
from tests.factory import PROTOBUF, auth, genai_attrs, request, span
from tests.ingest.test_durability import _sender

REAL_SERVER = bool(os.environ.get("DRIFTLINE_CLICKHOUSE_URL"))


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[clickhouse_http.Running]:
    with clickhouse_http.running(tmp_path / "clickhouse") as server:
        yield server


def _no_merges(store: Store) -> None:
    """Merges off on llm_calls: a ReplacingMergeTree merge would hide a span stored twice."""
    migrate(store)
    store.command("ALTER TABLE llm_calls MODIFY SETTING max_parts_to_merge_at_once = 1")


def _collector(tmp_path: Path, stand_in: clickhouse_http.Running) -> tuple[Store, Runtime, str]:
    """A collector on the stand-in (ack = "store", its default there), and an ingest key."""
    url = stand_in.url("driftline")
    store = open_store(clickhouse_url=url)
    runtime = build_runtime(make_settings(tmp_path, clickhouse_url=url), store)
    return store, runtime, keys.create_key(store, "alpha", "ingest")[1]


def _physical(store: Store) -> list[tuple[str, str]]:
    rows = store.query("SELECT trace_id, span_id FROM llm_calls")  # no FINAL: every copy
    return [(r["trace_id"], r["span_id"]) for r in rows]


def test_acknowledged_only_once_the_server_has_the_rows_and_nothing_kept_locally(
    tmp_path: Path, stand_in: clickhouse_http.Running
) -> None:
    store, rt, ingest = _collector(tmp_path, stand_in)
    assert isinstance(rt.writer, StoreCommitter)
    spans = [span(genai_attrs(prompt=f"question {i}")) for i in range(20)]
    with TestClient(create_app(rt)) as client:
        response = client.post(
            "/v1/traces",
            content=request(spans).SerializeToString(),
            headers={**PROTOBUF, **auth(ingest)},
        )
        # No wait: the answer came after the insert, so the rows are there already.
        assert response.status_code == 200
        assert store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 20
        assert client.get("/readyz").json()["wal_backlog_bytes"] == 0
    assert not (tmp_path / "data" / "wal").exists(), "store-ack mode keeps no log"
    store.close()


def test_the_server_down_is_a_503_and_the_retry_is_stored_once(
    tmp_path: Path, stand_in: clickhouse_http.Running
) -> None:
    store, rt, ingest = _collector(tmp_path, stand_in)
    headers = {**PROTOBUF, **auth(ingest)}
    body = request([span(genai_attrs(prompt="sent while the server is down"))]).SerializeToString()
    with TestClient(create_app(rt)) as client:
        client.post("/v1/traces", content=b"", headers=headers)  # the key is checked and cached
        stand_in.stop()
        down = client.post("/v1/traces", content=body, headers=headers)
        assert down.status_code == 503
        assert down.headers["retry-after"] == "5"
        assert client.get("/readyz").status_code == 503
        again = clickhouse_http.start(tmp_path / "clickhouse", port=stand_in.port)
        try:
            for _ in range(2):  # the retry, then a duplicate of it: stored once
                assert client.post("/v1/traces", content=body, headers=headers).status_code == 200
            assert client.get("/readyz").status_code == 200
            assert store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 1
        finally:
            store.close()
            again.stop()


def test_a_retry_racing_the_first_try_is_stored_once_by_its_token(
    tmp_path: Path, stand_in: clickhouse_http.Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tries look for their keys before either is stored, so both insert: the server keeps
    one, by the insert's deduplication token. With deduplication off it keeps both (the
    control)."""
    url = stand_in.url("driftline")
    store = open_store(clickhouse_url=url)
    _no_merges(store)
    rt = build_runtime(make_settings(tmp_path, clickhouse_url=url), store)
    monkeypatch.setattr("driftline.ingest.tables.existing_keys", lambda *_args: set())
    body = request([span(genai_attrs(prompt=f"q{i}")) for i in range(5)]).SerializeToString()
    record = envelope.pack("alpha", otlp.decode(body, otlp.PROTOBUF, None, 1 << 20).wire)
    batch = rt.writer.decoder.decode([record])
    try:
        for _ in range(2):
            store_batch(store, batch, rt.metrics, confirm_settings(0))
        assert len(_physical(store)) == 5
        for _ in range(2):  # the control
            store_batch(
                store,
                batch,
                rt.metrics,
                {**confirm_settings(0), "deduplicate_insert": "disable"},  # ClickHouse 26
            )
        assert len(_physical(store)) == 15
    finally:
        rt.writer.decoder.engine.close()
        store.close()


@pytest.mark.timeout(300)
def test_kill_9_in_store_ack_mode_loses_nothing_acknowledged(
    tmp_path: Path, stand_in: clickhouse_http.Running
) -> None:
    """A collector killed under load three times: every span it acknowledged is in the server,
    none twice; a restarted collector has nothing to replay."""
    url = stand_in.url("driftline")
    with open_store(clickhouse_url=url) as store:
        _no_merges(store)
    data = tmp_path / "collector"
    args = ("--clickhouse-url", url)
    server = start_server(data, args=args)
    acked: list[tuple[str, str]] = []
    rng = random.Random(5)
    for _ in range(3):
        stop = threading.Event()
        threads = [
            threading.Thread(target=_sender, args=(server.url, server.ingest_key, stop, acked))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.8, 2.5))  # mid-stream: inserts in flight
        stop_server(server, kill=True)
        stop.set()
        for t in threads:
            t.join()
        key = server.ingest_key
        server = start_server(data, port=int(server.url.rsplit(":", 1)[1]), args=args)
        server.ingest_key = key  # printed on the first start only
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "driftline_wal_backlog_bytes 0.0" in metrics  # nothing waits in the collector
    stop_server(server)
    assert not (data / "wal").exists()
    assert len(acked) > 300, "the senders should have been acknowledged many spans"
    with open_store(clickhouse_url=url) as store:
        stored = _physical(store)
    extra = len(stored) - len(set(stored))
    assert not extra, f"{extra} extra copies of spans were stored"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged spans were lost"


@pytest.fixture
def real_server_url() -> Iterator[str]:
    base = os.environ["DRIFTLINE_CLICKHOUSE_URL"]
    url = urlunparse(urlparse(base)._replace(path=f"/driftline_ack_{secrets.token_hex(4)}"))
    yield url
    with open_store(clickhouse_url=url) as store:
        store.command(f"DROP DATABASE IF EXISTS {store.database}")


@pytest.mark.skipif(not REAL_SERVER, reason="needs a ClickHouse server: DRIFTLINE_CLICKHOUSE_URL")
def test_store_ack_on_a_real_server(tmp_path: Path, real_server_url: str) -> None:
    store = open_store(clickhouse_url=real_server_url)
    rt = build_runtime(make_settings(tmp_path, clickhouse_url=real_server_url), store)
    _, ingest = keys.create_key(store, "alpha", "ingest")
    body = request([span(genai_attrs(prompt="real server"))]).SerializeToString()
    with TestClient(create_app(rt)) as client:
        for _ in range(2):
            response = client.post("/v1/traces", content=body, headers={**PROTOBUF, **auth(ingest)})
            assert response.status_code == 200
    assert store.query("SELECT count() AS n FROM llm_calls FINAL")[0]["n"] == 1
    store.close()
