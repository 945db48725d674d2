"""The SDK never hurts the app: collector down, hung or failing changes nothing for the caller,
memory stays bounded, drops are counted and logged at most once a minute, and what can wait
(backlog, spool) arrives once the collector is back."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driftline import sdk
from driftline.sdk import observe
from driftline.store import Store, keys
from tests.conftest import free_port
from tests.sdk.conftest import LiveCollector, start_live


@observe(name="work")
def work(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x * 2


class HungCollector:
    """Accepts connections and never answers until released."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connected = threading.Event()
        self.release = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.release.set()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung() -> Iterator[HungCollector]:
    server = HungCollector()
    yield server
    server.close()


def status_server(status: int) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"error": "bad"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_unreachable_collector_changes_nothing_for_the_app(
    sdk_log: pytest.LogCaptureFixture,
) -> None:
    sdk.init(endpoint=f"http://127.0.0.1:{free_port()}", schedule_delay=0.01)
    assert [work(i) for i in range(2000)] == [i * 2 for i in range(2000)]
    with pytest.raises(ValueError, match="negative"):
        work(-1)
    assert sdk.flush(timeout=2) is False
    stats = sdk.stats()
    assert stats["spans_sent"] == 0
    assert stats["backlog_payloads"] >= 1
    retries = [r for r in sdk_log.records if "will retry" in r.getMessage()]
    assert len(retries) == 1  # logged once, however many exports failed
    assert stats["export_failures"] >= 1


def test_calls_return_while_the_collector_hangs(hung: HungCollector) -> None:
    sdk.init(endpoint=hung.url, schedule_delay=0.01, export_timeout=60, max_export_batch_size=8)
    work(1)
    assert hung.connected.wait(10)  # the worker is now stuck waiting for an answer
    results = [work(i) for i in range(500)]
    assert results == [i * 2 for i in range(500)]
    assert not hung.release.is_set()  # every call above returned before the collector answered
    assert sdk.stats()["spans_sent"] == 0


def test_memory_stays_bounded_and_drops_are_counted(
    hung: HungCollector, sdk_log: pytest.LogCaptureFixture
) -> None:
    sdk.init(
        endpoint=hung.url,
        schedule_delay=0.01,
        export_timeout=60,
        max_queue_size=100,
        max_export_batch_size=10,
    )
    work(0)
    assert hung.connected.wait(10)
    for i in range(5000):
        work(i)
    stats = sdk.stats()
    assert stats["queued_spans"] <= 100
    assert stats["spans_dropped"] >= 5000 - 100 - 10
    assert stats["dropped_by_reason"]["queue full"] == stats["spans_dropped"]
    drops = [r for r in sdk_log.records if "dropped spans: queue full" in r.getMessage()]
    assert len(drops) == 1


def test_backlog_is_sent_once_the_collector_comes_up(live_store: Store, tmp_path: Path) -> None:
    port = free_port()
    key = keys.create_key(live_store, "alpha", "ingest")[1]
    sdk.init(endpoint=f"http://127.0.0.1:{port}", api_key=key, schedule_delay=0.01)
    seen = []

    @observe(name="while-down")
    def while_down() -> None:
        seen.append(sdk.current_trace_id())

    for _ in range(20):
        while_down()
    assert sdk.flush(timeout=2) is False
    collector = start_live(tmp_path / "data", live_store, port=port)
    try:
        assert sdk.flush(timeout=10) is True
        rows = collector.rows("spans", seen[-1])
        assert len(rows) == 1
        assert sdk.stats()["spans_sent"] == 20
    finally:
        collector.stop()


def test_spool_keeps_spans_across_an_app_restart(
    live: LiveCollector, tmp_path: Path, sdk_log: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{free_port()}"
    sdk.init(endpoint=down, spool_dir=spool, schedule_delay=0.01)
    traces = []

    @observe(name="spooled")
    def spooled() -> None:
        traces.append(sdk.current_trace_id())

    for _ in range(30):
        spooled()
    sdk.feedback("0123456789abcdef0123456789abcdef", "thumbs", True)
    sdk.shutdown(timeout=2)  # the app stops while the collector is still down
    assert list(spool.glob("*.payload"))
    assert not any("dropped" in r.getMessage() for r in sdk_log.records)

    sdk.init(endpoint=live.url, api_key=live.ingest_key, spool_dir=spool, schedule_delay=0.01)
    assert sdk.flush(timeout=10) is True
    assert not list(spool.glob("*.payload"))
    assert len(live.rows("spans", traces[0])) == 1
    assert len(live.rows("spans", traces[-1])) == 1
    thumbs = live.store.query(
        "SELECT value_number FROM feedback FINAL WHERE trace_id = {t:String}",
        {"t": "0123456789abcdef0123456789abcdef"},
    )
    assert thumbs == [{"value_number": 1.0}]


def test_spool_size_is_bounded(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sdk.init(
        endpoint=f"http://127.0.0.1:{free_port()}",
        spool_dir=spool,
        spool_max_bytes=20_000,
        schedule_delay=0.01,
        max_export_batch_size=20,
    )
    for i in range(2000):
        work(i)
    sdk.shutdown(timeout=5)
    assert sum(f.stat().st_size for f in spool.glob("*.payload")) <= 20_000


def test_refused_payloads_are_dropped_and_counted(sdk_log: pytest.LogCaptureFixture) -> None:
    server, url = status_server(400)
    try:
        sdk.init(endpoint=url, schedule_delay=0.01)
        for i in range(10):
            work(i)
        assert sdk.flush(timeout=5) is True  # nothing left: the collector will never take it
        stats = sdk.stats()
        assert stats["spans_dropped"] == 10
        assert any("HTTP 400" in r.getMessage() for r in sdk_log.records)
    finally:
        server.shutdown()


def test_wrong_key_keeps_spans_for_retry(sdk_log: pytest.LogCaptureFixture) -> None:
    server, url = status_server(401)
    try:
        sdk.init(endpoint=url, api_key="dl_wrong", schedule_delay=0.01)
        work(1)
        assert sdk.flush(timeout=5) is False
        assert sdk.stats()["spans_dropped"] == 0
        assert sdk.stats()["backlog_payloads"] == 1
        assert any("HTTP 401" in r.getMessage() for r in sdk_log.records)
    finally:
        server.shutdown()


def test_init_is_idempotent(live: LiveCollector) -> None:
    first = sdk.init(endpoint=live.url, api_key=live.ingest_key, schedule_delay=0.01)
    assert sdk.init(endpoint=live.url, api_key=live.ingest_key, schedule_delay=0.01) is first
    assert sdk.init(endpoint=live.url, service_name="other") is first  # warned, not changed


def test_a_full_memory_backlog_drops_and_counts(sdk_log: pytest.LogCaptureFixture) -> None:
    sdk.init(
        endpoint=f"http://127.0.0.1:{free_port()}",
        schedule_delay=0.01,
        max_backlog_bytes=5_000,
        max_export_batch_size=10,
    )
    for i in range(3000):
        work(i)
    sdk.flush(timeout=2)
    stats = sdk.stats()
    assert stats["dropped_by_reason"]["memory backlog full"] > 0
    assert stats["spans_dropped"] + stats["queued_spans"] + 10 * stats["backlog_payloads"] >= 3000
    assert len([r for r in sdk_log.records if "memory backlog full" in r.getMessage()]) == 1
