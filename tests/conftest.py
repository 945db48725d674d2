"""Shared fixtures: a collector on a real embedded ClickHouse (chDB), in process or as a server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from driftline.api.app import build_runtime, create_app
from driftline.api.config import Settings, load_settings
from driftline.api.runtime import Runtime
from driftline.store import Store, keys, migrate, open_store
from driftline.store.migrations import migrations
from tests import clickhouse_http

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 60) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migrate_to(store: Store, version: int) -> None:
    """Bring a fresh database to `version` the way an older driftline left it."""
    store.command(
        "CREATE TABLE schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
    )
    for migration in migrations():
        if migration.version <= version:
            for statement in migration.statements:
                store.command(statement)
            store.command(f"INSERT INTO schema_migrations (version) VALUES ({migration.version})")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh embedded ClickHouse (chDB allows one open at a time per process)."""
    s = open_store(tmp_path / "data")
    migrate(s)
    yield s
    s.close()


# The backends a test that takes `backend` (or `open_backend`) runs on: the embedded engine, the
# server backend against the stand-in for a ClickHouse server (tests/clickhouse_http.py), and a
# real server when DRIFTLINE_CLICKHOUSE_URL names one.
BACKENDS = ["embedded", "server"] + (
    ["real-server"] if os.environ.get("DRIFTLINE_CLICKHOUSE_URL") else []
)


@pytest.fixture(scope="session")
def clickhouse_stand_in(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[clickhouse_http.Running]:
    """A stand-in for a remote ClickHouse server (its HTTP interface over chDB), in its own
    process, shared by the session; each test gets a database of its own."""
    with clickhouse_http.running(tmp_path_factory.mktemp("clickhouse") / "chdb") as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_backend(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator:
    """Opens a store on `backend`, on the same data at each call: the embedded engine in
    tmp_path, or a database of this test's own on the stand-in or the real server (dropped
    after the test)."""
    if backend == "embedded":
        yield lambda: open_store(tmp_path / "data")
        return
    database = f"driftline_test_{uuid.uuid4().hex[:12]}"
    if backend == "server":
        url = request.getfixturevalue("clickhouse_stand_in").url(database)
    else:
        real = urlsplit(os.environ["DRIFTLINE_CLICKHOUSE_URL"])
        url = urlunsplit((real.scheme, real.netloc, f"/{database}", "", ""))
    yield lambda: open_store(clickhouse_url=url)
    with open_store(clickhouse_url=url) as s:
        s.command(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture
def backend_store(open_backend: Callable[[], Store]) -> Iterator[Store]:
    """A fresh, migrated store on each backend; a module or folder whose tests should run on
    every backend makes it its `store`."""
    s = open_backend()
    migrate(s)
    yield s
    s.close()


@dataclass
class Collector:
    client: TestClient
    runtime: Runtime
    ingest_key: str
    read_key: str
    admin_key: str

    def wait_stored(self, table: str = "llm_calls", count: int = 1, timeout: float = 10) -> int:
        """Wait until the writer has stored at least `count` rows in the table."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.runtime.store.query(f"SELECT count() AS n FROM {table}")[0]["n"]
            if n >= count or time.monotonic() > deadline:
                return int(n)
            time.sleep(0.05)

    def drain(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.runtime.writer.backlog_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an in-process collector; detectors and the per-project limit on expensive
    requests off unless a test turns them on (tests search far faster than people)."""
    overrides = {"detectors": {"enabled": False}, "heavy_rate_limit_per_second": 0, **overrides}
    return load_settings(None, data=tmp_path / "data", writer_flush_interval=0.01, **overrides)


@pytest.fixture
def collector_factory(tmp_path: Path, store: Store) -> Iterator:
    """Build an in-process collector with optional setting overrides."""
    opened: list[TestClient] = []

    def build(project: str = "alpha", **overrides: object) -> Collector:
        rt = build_runtime(make_settings(tmp_path, **overrides), store)
        client = TestClient(create_app(rt))
        client.__enter__()
        opened.append(client)
        made = {
            role: keys.create_key(store, project, role)[1] for role in ("ingest", "read", "admin")
        }
        return Collector(client, rt, made["ingest"], made["read"], made["admin"])

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def collector(collector_factory) -> Collector:
    return collector_factory()


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    data: Path
    ingest_key: str
    read_key: str
    log: Path


def start_server(
    data: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> ServerProcess:
    """`driftline serve` as a real process; returns once /readyz answers."""
    port = port or free_port()
    data.parent.mkdir(parents=True, exist_ok=True)  # `serve` makes the folder itself
    log_path = data.parent / f"server-{port}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftline.cli",
                "serve",
                "--data",
                str(data),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DRIFTLINE_DETECTORS__ENABLED": "false", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("server exited: " + log_path.read_text())
        time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("server did not become ready")
    found = {}
    text = log_path.read_text()  # the first start prints the default project's keys
    for role in ("ingest", "read"):
        match = re.search(rf"{role} key:\s+(\S+)", text)
        found[role] = match.group(1) if match else ""
    return ServerProcess(process, url, data, found["ingest"], found["read"], log_path)


def stop_server(server: ServerProcess, kill: bool = False) -> None:
    if server.process.poll() is None:
        if kill:
            server.process.kill()
        else:
            server.process.terminate()
        server.process.wait(timeout=60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data")
    yield srv
    stop_server(srv)
