"""`driftline embed`, `reference create|list` and `detect --once` on a data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from driftline import sdk
from tests.conftest import start_server, stop_server
from tests.detectors.conftest import MIX, send, texts


def driftline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,  # before pytest's own 300 s: the failure names the command
        env={**os.environ, "PYTHONPATH": os.getcwd(), "DRIFTLINE_DETECTORS__ENABLED": "false"},
    )


def test_embed_reference_and_detect_from_the_shell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        sdk.init(endpoint=server.url, api_key=server.ingest_key, service_name="bot")
        send(texts(MIX, 12, 0))
        busy = driftline("embed", "--data", str(data))
        assert busy.returncode == 1 and "holds" in busy.stderr  # serve owns the folder
    finally:
        sdk.shutdown()
        stop_server(server)

    embedded = driftline("embed", "--backfill", "--data", str(data))
    assert embedded.returncode == 0, embedded.stderr
    assert "embedded 60 calls; 0 left" in embedded.stdout
    made = driftline(
        "reference", "create", "--name", "r", "--service", "bot", "--limit", "50",
        "--data", str(data),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "reference r version 1: 50 calls" in made.stdout
    listed = driftline("reference", "list", "--data", str(data))
    assert "default\tr\tv1\t50 calls\t{'service': 'bot'}" in listed.stdout
    too_few = driftline("reference", "create", "--name", "x", "--limit", "10", "--data", str(data))
    assert too_few.returncode == 1 and "at least 50" in too_few.stderr
    once = driftline("detect", "--once", "--data", str(data))
    assert once.returncode == 0, once.stderr  # 10 calls after the reference: no full window
    assert "DRIFTING" not in once.stdout
