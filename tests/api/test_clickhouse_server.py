"""The collector against a real ClickHouse server (clickhouse-connect backend).

Runs only when DRIFTLINE_CLICKHOUSE_URL names a server, e.g. http://default:@127.0.0.1:8123;
each run uses a fresh database and drops it afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from fastapi.testclient import TestClient

from driftline.api.app import build_runtime, create_app
from driftline.store import Store, keys, open_store
from tests.conftest import make_settings
from tests.factory import PROTOBUF, auth, genai_attrs, request, span

URL = os.environ.get("DRIFTLINE_CLICKHOUSE_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="needs a ClickHouse server: DRIFTLINE_CLICKHOUSE_URL"
)


@pytest.fixture
def server_url() -> Iterator[str]:
    assert URL is not None
    parsed = urlparse(URL)
    url = urlunparse(parsed._replace(path=f"/driftline_test_{secrets.token_hex(4)}"))
    yield url
    store = open_store(clickhouse_url=url)
    store.command(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def test_ingest_read_and_dedupe_on_a_server(tmp_path: Path, server_url: str) -> None:
    settings = make_settings(tmp_path, clickhouse_url=server_url)
    store: Store = open_store(clickhouse_url=server_url)
    runtime = build_runtime(settings, store)
    _, ingest = keys.create_key(store, "alpha", "ingest")
    _, read = keys.create_key(store, "alpha", "read")
    body = request([span(genai_attrs(prompt="server question"))]).SerializeToString()
    with TestClient(create_app(runtime)) as client:
        for _ in range(2):  # the same batch twice is stored once
            response = client.post("/v1/traces", content=body, headers={**PROTOBUF, **auth(ingest)})
            assert response.status_code == 200
        while runtime.writer.backlog_bytes():
            pass
        items = client.get("/api/calls", headers=auth(read)).json()["items"]
    assert [i["input_text"] for i in items] == ["server question"]
    assert store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 1
    store.close()
