"""SDK fixtures: a real collector on loopback (uvicorn + chDB), and a clean SDK per test."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from driftline import sdk
from driftline.api.app import build_runtime, create_app
from driftline.api.runtime import Runtime
from driftline.store import Store, keys, migrate, open_store
from tests.conftest import free_port, make_settings
from tests.sdk.llm_server import FakeLLMServer


@dataclass
class LiveCollector:
    url: str
    ingest_key: str
    read_key: str
    runtime: Runtime
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def store(self) -> Store:
        return self.runtime.store

    def rows(
        self, table: str, trace_id: str, count: int = 1, timeout: float = 15
    ) -> list[dict[str, Any]]:
        """Flush the SDK, then wait until `count` rows of the trace are stored; return them."""
        sdk.flush(timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            found = self.store.query(
                f"SELECT * FROM {table} FINAL WHERE trace_id = {{t:String}} ORDER BY start_time",
                {"t": trace_id},
            )
            if len(found) >= count or time.monotonic() > deadline:
                for row in found:
                    row["attributes"] = dict(row["attributes"])
                return found
            time.sleep(0.05)

    def feedback(self, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        sdk.flush(timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            found = self.store.query("SELECT * FROM feedback FINAL ORDER BY created_at")
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_live(
    data: Path, store: Store, port: int | None = None, **settings: object
) -> LiveCollector:
    """The collector app under uvicorn in a thread, bound to 127.0.0.1 on a free port."""
    settings = {"rate_limit_per_second": 1e6, **settings}
    runtime = build_runtime(make_settings(data.parent, **settings), store)
    ingest = keys.create_key(store, "alpha", "ingest")[1]
    read = keys.create_key(store, "alpha", "read")[1]
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("collector did not start")
        time.sleep(0.02)
    return LiveCollector(f"http://127.0.0.1:{port}", ingest, read, runtime, server, thread)


@pytest.fixture(scope="module")
def live_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    data = tmp_path_factory.mktemp("collector") / "data"
    store = open_store(data)
    migrate(store)
    yield store
    store.close()


@pytest.fixture(scope="module")
def live(live_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    collector = start_live(tmp_path_factory.mktemp("live") / "data", live_store)
    yield collector
    collector.stop()


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_sdk() -> Iterator[None]:
    """Every test starts without an SDK and leaves none running."""
    sdk.shutdown(timeout=5)
    yield
    sdk.shutdown(timeout=5)


def init_for(live: LiveCollector, **settings: Any) -> None:
    sdk.init(endpoint=live.url, api_key=live.ingest_key, schedule_delay=0.05, **settings)


@pytest.fixture
def sdk_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="driftline.sdk")
    return caplog
