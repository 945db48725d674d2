"""Request bodies take from one byte budget (`max_inflight_body_bytes`), not a count of requests:
past it a request is refused with 503 and Retry-After before anything of it is acknowledged, a
body that alone needs more than the budget is a 413, and nothing acknowledged is lost. The
memory settings are checked when the server starts, and a wrong one is named."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.rpc.status_pb2 import Status

from driftline.api.config import ConfigError, load_settings
from tests import factory as f
from tests.conftest import ServerProcess, start_server, stop_server, wait_for

BUDGET = 256 * 1024


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[ServerProcess]:
    """A collector whose bodies may hold 256 KiB together (and one body as much)."""
    server = start_server(
        tmp_path / "data",
        env={
            "DRIFTLINE_MAX_BODY_BYTES": str(BUDGET),
            "DRIFTLINE_MAX_INFLIGHT_BODY_BYTES": str(BUDGET),
            "DRIFTLINE_RATE_LIMIT_PER_SECOND": "0",
        },
    )
    yield server
    stop_server(server)


def spans_of(size: int) -> tuple[bytes, set[str]]:
    """An export of about `size` bytes of GenAI spans, and their span ids (hex)."""
    spans = []
    while len(f.request(spans).SerializeToString()) < size:
        spans.append(f.span(f.genai_attrs(answer="x" * 2000)))
    return f.request(spans).SerializeToString(), {s.span_id.hex() for s in spans}


def connect(server: ServerProcess) -> http.client.HTTPConnection:
    host, port = server.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def export(server: ServerProcess, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/traces",
        content=body,
        headers={**f.PROTOBUF, **f.auth(server.ingest_key), **headers},
        timeout=30,
    )


def stored_span_ids(server: ServerProcess) -> set[str]:
    found = httpx.get(
        server.url + "/api/calls", params={"limit": 1000}, headers=f.auth(server.read_key)
    )
    assert found.status_code == 200, found.text
    return {call["span_id"] for call in found.json()["items"]}


def test_bodies_past_the_byte_budget_are_refused_until_it_frees_and_none_acknowledged_is_lost(
    tight: ServerProcess,
) -> None:
    held_body, held_ids = spans_of(150_000)
    # A request whose body is declared but not yet sent holds its 150 KB of the budget.
    held = connect(tight)
    held.putrequest("POST", "/v1/traces")
    for name, value in {**f.PROTOBUF, **f.auth(tight.ingest_key)}.items():
        held.putheader(name, value)
    held.putheader("content-length", str(len(held_body)))
    held.endheaders()
    held.send(held_body[:1000])

    acknowledged: set[str] = set()
    refused: list[tuple[bytes, set[str]]] = []

    def another_is_refused() -> httpx.Response | None:
        body, ids = spans_of(150_000)  # 150 KB more does not fit beside it
        answer = export(tight, body)
        if answer.status_code == 200:  # sent before the held request took its share
            acknowledged.update(ids)
            return None
        refused.append((body, ids))
        return answer

    busy = wait_for(another_is_refused, "a body past the budget was refused")
    assert busy.status_code == 503
    assert int(busy.headers["retry-after"]) >= 1
    assert busy.headers["content-type"] == f.PROTOBUF["content-type"]  # OTLP's error shape
    assert "max_inflight_body_bytes" in Status.FromString(busy.content).message

    # The JSON API takes from the same budget, and refuses before reading the body.
    feedback = connect(tight)
    feedback.putrequest("POST", "/api/feedback")
    feedback.putheader("authorization", f"Bearer {tight.ingest_key}")
    feedback.putheader("content-type", "application/json")
    feedback.putheader("content-length", "150000")
    feedback.endheaders()
    answer = feedback.getresponse()
    assert answer.status == 503 and int(answer.getheader("retry-after", "0")) >= 1
    assert "max_inflight_body_bytes" in answer.read().decode()

    # Small bodies still fit beside the held one.
    small, small_ids = spans_of(2_000)
    assert export(tight, small).status_code == 200
    acknowledged |= small_ids

    held.send(held_body[1000:])
    done = held.getresponse()
    assert done.status == 200, done.read()
    acknowledged |= held_ids
    for body, ids in refused:  # the client retries what was refused: now there is room
        assert export(tight, body).status_code == 200
        acknowledged |= ids

    wait_for(lambda: acknowledged <= stored_span_ids(tight), "every acknowledged span stored")


def test_a_gzip_body_inflating_past_the_whole_budget_is_413(tight: ServerProcess) -> None:
    body, ids = spans_of(BUDGET)  # about the budget inflated; the gzip body is small
    assert len(gzip.compress(body)) < BUDGET // 4
    answer = export(tight, gzip.compress(body + body), **{"content-encoding": "gzip"})
    assert answer.status_code == 413
    assert "max_inflight_body_bytes" in Status.FromString(answer.content).message
    fits, fits_ids = spans_of(BUDGET // 2)
    assert export(tight, gzip.compress(fits), **{"content-encoding": "gzip"}).status_code == 200
    wait_for(lambda: fits_ids <= stored_span_ids(tight), "the gzip body that fits is stored")
    assert not ids & stored_span_ids(tight)


MiB = 1 << 20


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_body_bytes": 32 * MiB, "max_inflight_body_bytes": 16 * MiB},
         "max_inflight_body_bytes"),
        ({"store_memory_bytes": 128 * MiB, "store_query_memory_bytes": 256 * MiB},
         "store_query_memory_bytes"),
        ({"store_memory_bytes": MiB}, "store_memory_bytes"),
        ({"store_background_threads": 0}, "store_background_threads"),
        ({"max_inflight_body_bytes": 1024}, "max_inflight_body_bytes"),
    ],
)  # fmt: skip
def test_a_wrong_memory_setting_is_refused_by_name(
    tmp_path: Path, settings: dict[str, int], named: str
) -> None:
    with pytest.raises(ConfigError, match=rf"\b{named}: "):
        load_settings(None, data=tmp_path / "data", **settings)


def test_serve_does_not_start_with_a_budget_smaller_than_a_body(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DRIFTLINE_MAX_BODY_BYTES": str(8 << 20),
        "DRIFTLINE_MAX_INFLIGHT_BODY_BYTES": str(4 << 20),
    }
    done = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "serve", "--data", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert re.search(r"max_inflight_body_bytes: .*at least max_body_bytes", done.stderr)
