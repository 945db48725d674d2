"""The issue's scenario as a new user runs it: `driftline serve` with detectors on, calls sent
with the SDK, a reference frozen over the API, then a topic shift with off-topic answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from driftline import sdk
from tests.conftest import ServerProcess, start_server, stop_server
from tests.detectors.conftest import MIX, send, texts


def admin_key(server: ServerProcess) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "driftline.collector", "keys", "create", "--project", "default",
         "--role", "admin", "--data", str(server.data)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    return made.stdout.split()[-1]


def get(server: ServerProcess, path: str, **params: Any) -> Any:
    response = httpx.get(
        server.url + path,
        params=params,
        headers={"Authorization": f"Bearer {server.read_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["items"]


def test_serve_detects_the_shift_and_queues_off_topic_answers(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data",
        env={
            "DRIFTLINE_DETECTORS__ENABLED": "true",
            "DRIFTLINE_DETECTORS__INTERVAL_SECONDS": "1",
            "DRIFTLINE_DETECTORS__WINDOW_CALLS": "150",
            "DRIFTLINE_DETECTORS__PERMUTATIONS": "200",
            "DRIFTLINE_DETECTORS__CONSECUTIVE_WINDOWS": "1",
        },
    )
    try:
        sdk.init(endpoint=server.url, api_key=server.ingest_key, service_name="bot")
        send(texts(MIX, 60, 0))
        deadline = time.monotonic() + 60
        while len(get(server, "/api/calls", limit=1000)) < 300:
            assert time.monotonic() < deadline, "the calls were not stored"
            time.sleep(0.2)
        made = httpx.post(
            server.url + "/api/references",
            json={"name": "bot-v1", "service": "bot"},
            headers={"Authorization": f"Bearer {admin_key(server)}"},
            timeout=30,
        )
        assert made.status_code == 201, made.text

        send(texts(MIX, 30, 60))
        shifted = texts(("games", "fonts", "golang"), 50, 0)
        off_topic = texts(("doc",), 10, 100)
        for k, i in enumerate(range(10, 150, 15)):
            shifted[i] = (shifted[i][0], off_topic[k][1])
        send(shifted)

        deadline = time.monotonic() + 300
        while len(windows := get(server, "/api/drift", reference="bot-v1")) < 2:
            assert time.monotonic() < deadline, "no drift windows: " + server.log.read_text()
            time.sleep(1)
        assert [w["drifting"] for w in windows] == [False, True]
        assert all(t["p_value"] < 0.01 for t in windows[1]["tests"])
        queue = get(server, "/api/review-queue", source="flag", limit=1000)
        reasons = {q["output_text"]: q["reasons"] for q in queue}
        queued = [reasons[text] for _, text in off_topic if text in reasons]
        assert len(queued) >= 8  # the off-topic answers are queued, with why
        assert all({"low_relevance", "novel"} & set(r) for r in queued)
    finally:
        sdk.shutdown()
        stop_server(server)
