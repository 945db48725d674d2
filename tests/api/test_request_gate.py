"""Hostile bodies: no key means no byte of the body is read, and a body past its route's cap is
refused with 413 while it streams in, whatever Content-Length says."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from driftline.api.gate import SMALL_BODIES
from driftline.store import keys
from tests.conftest import Collector, ServerProcess

MiB = 1024 * 1024


class Upload:
    """An ASGI request whose body arrives in 1 MiB chunks, counting what the app takes."""

    def __init__(self, chunks: int, declare: bool = False) -> None:
        self.chunks, self.declare, self.taken = chunks, declare, 0
        self.status: int | None = None
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        if self.taken >= self.chunks:
            return {"type": "http.disconnect"}
        self.taken += 1
        return {"type": "http.request", "body": b"{" + b" " * (MiB - 2) + b"}",
                "more_body": self.taken < self.chunks}  # fmt: skip

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def run(self, app: Any, method: str, path: str, key: str | None = None) -> Upload:
        headers = [(b"content-type", b"application/json")]
        if key is not None:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        if self.declare:
            headers.append((b"content-length", str(self.chunks * MiB).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                 "scheme": "http", "root_path": "", "app": app}  # fmt: skip
        asyncio.run(app(scope, self.receive, self.send))
        return self


def test_a_64_mib_body_without_a_key_is_refused_before_a_byte_is_read(
    collector: Collector,
) -> None:
    app = collector.client.app
    for path in ("/api/admin/keys", "/api/silences", "/api/datasets", "/api/feedback"):
        upload = Upload(64).run(app, "POST", path)
        assert (upload.status, upload.taken) == (401, 0), path
        assert b"missing API key" in upload.body
        forged = Upload(64).run(app, "POST", path, key="dl_" + "0" * 12 + "_" + "0" * 40)
        assert (forged.status, forged.taken) == (401, 0), path
        assert b"unknown" in forged.body


def test_a_non_ascii_key_is_a_401_not_a_crash(server: ServerProcess) -> None:
    """`serve` has an operator token, which every key is first compared with: a non-ASCII
    key made that comparison raise (a 500)."""
    for key in ("dl_\u00e9\u20ac".encode(), "dlo_\u00e9".encode("latin-1")):
        for method, path in (("GET", "/api/calls"), ("POST", "/api/admin/keys")):
            answer = httpx.request(
                method, server.url + path, headers={"Authorization": b"Bearer " + key}, json={}
            )
            assert answer.status_code == 401, (path, answer.text)


def test_a_body_past_its_routes_cap_stops_streaming_at_the_cap(collector: Collector) -> None:
    app = collector.client.app
    admin = dict(SMALL_BODIES)["/api/admin/"]
    upload = Upload(64).run(app, "POST", "/api/admin/keys", key=collector.admin_key)
    assert upload.status == 413
    assert upload.taken <= admin // MiB + 1  # the first chunk past the cap ends it
    assert f"limit of {admin} bytes".encode() in upload.body
    # Declared too large: refused from the headers alone.
    declared = Upload(64, declare=True).run(app, "POST", "/api/feedback", key=collector.admin_key)
    assert (declared.status, declared.taken) == (413, 0)
    # The sign-in form takes a few fields, however the body arrives.
    login = Upload(2).run(app, "POST", "/review/login")
    assert login.status == 413 and login.taken == 1


def test_a_body_under_its_cap_still_works(collector: Collector) -> None:
    made = collector.client.post(
        "/api/admin/keys", json={"project": "alpha", "role": "read", "name": "ok"},
        headers={"Authorization": f"Bearer {collector.admin_key}"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "read"


class CountingStore:
    """The runtime's store, counting the queries on api_keys."""

    def __init__(self, store: Any) -> None:
        self.store, self.asked = store, 0

    def query(self, sql: str, params: Any = None) -> Any:
        self.asked += "api_keys" in sql
        return self.store.query(sql, params)


def test_unknown_keys_cannot_flood_the_store(collector: Collector) -> None:
    """Well-formed keys that do not exist used to cost one store query each, on the one chDB
    session ingest needs too. Now the keys are held in memory, and the lookups of keys the
    table lacks (a key made by another process since) are bounded overall."""
    checker, store = collector.runtime.keys, collector.runtime.store
    counting = CountingStore(store)
    checker.store = counting  # type: ignore[assignment]
    started = time.monotonic()
    for i in range(1000):
        forged = {"Authorization": f"Bearer dl_{i:012x}_{'0' * 40}"}
        assert collector.client.get("/api/calls", headers=forged).status_code == 401
    elapsed = time.monotonic() - started
    reads = elapsed / collector.runtime.settings.key_cache_seconds + 1
    assert counting.asked <= 20 + 20 * elapsed + reads, (counting.asked, elapsed)
    good = {"Authorization": f"Bearer {collector.read_key}"}
    assert collector.client.get("/api/calls", headers=good).status_code == 200
    _, newer = keys.create_key(store, "alpha", "read")  # made by another process
    time.sleep(0.2)  # the lookup budget refills
    later = {"Authorization": f"Bearer {newer}"}
    assert collector.client.get("/api/calls", headers=later).status_code == 200
