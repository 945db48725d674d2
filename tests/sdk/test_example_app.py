"""The example app as a new user runs it, against `driftline serve` as a real process: the
collector is killed mid-run and restarted; the app notices nothing and, with a spool, every
call arrives (sent by the app itself if it still runs, else by its next start)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerProcess, free_port, start_server, stop_server
from tests.sdk.llm_server import FakeLLMServer, Reply

QUESTIONS = 24


def calls(server: ServerProcess, key: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/api/calls",
        params={"service": "support-bot", "limit": 1000},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    response.raise_for_status()
    return list(response.json()["items"])


def run_app(url: str, key: str, llm: FakeLLMServer, spool: Path, questions: int) -> Any:
    return subprocess.Popen(
        [sys.executable, "examples/support_bot.py", "--questions", str(questions),
         "--interval", "0.1"],
        env={
            **os.environ,
            "PYTHONPATH": os.getcwd(),
            "OPENAI_BASE_URL": llm.base_url + "/v1",
            "OPENAI_API_KEY": "unused",
            "DRIFTLINE_ENDPOINT": url,
            "DRIFTLINE_API_KEY": key,
            "DRIFTLINE_SPOOL_DIR": str(spool),
            "DRIFTLINE_SCHEDULE_DELAY": "0.05",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_example_app_survives_a_collector_outage(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path / "data", port=port)
    read_key, ingest_key = server.read_key, server.ingest_key  # printed on the first start only
    spool = tmp_path / "spool"
    with FakeLLMServer() as llm:
        llm.push(*[Reply(text=f"answer {i}", input_tokens=30 + i) for i in range(QUESTIONS)])
        app = run_app(server.url, ingest_key, llm, spool, QUESTIONS)
        assert app.stdout is not None
        lines = []
        for line in app.stdout:
            lines.append(line)
            if len(lines) == 6:
                stop_server(server, kill=True)  # the collector dies mid-run
            if len(lines) == 14:
                server = start_server(tmp_path / "data", port=port)
        _, errors = app.communicate(timeout=60)
        if len(lines) < 14:  # the app ended before the restart
            server = start_server(tmp_path / "data", port=port)
        llm.push(Reply(text="after restart", input_tokens=99))
        again = run_app(server.url, ingest_key, llm, spool, 1)
        again.communicate(timeout=60)
    try:
        assert app.returncode == 0, errors
        answers = [line for line in lines if "->" in line]
        assert [line.split("-> ")[1].strip() for line in answers] == [
            repr(f"answer {i}") for i in range(QUESTIONS)
        ]  # every answer, in order, exactly as the model gave it
        assert "Traceback" not in errors

        stored = calls(server, read_key)
        for _ in range(100):
            if len(stored) == QUESTIONS + 1:
                break
            time.sleep(0.1)
            stored = calls(server, read_key)
        tokens = sorted(c["input_tokens"] for c in stored)
        assert tokens == [30 + i for i in range(QUESTIONS)] + [99]  # each call once, none lost
        stored = [c for c in stored if c["input_tokens"] != 99]
        streamed = [c for c in stored if c["attributes"].get("gen_ai.request.stream") == "true"]
        assert len(streamed) == QUESTIONS // 2
        for call in stored:
            assert call["request_model"] == "gpt-4o-mini"
            assert call["response_model"] == "gpt-4o-mini-2024-07-18"
            assert call["output_tokens"] == 5
            assert call["agent_name"] == "support-bot"
            assert call["output_text"].startswith("answer ")
            assert call["input_messages"][-1]["role"] == "user"
        assert not list((tmp_path / "spool").glob("*.payload"))
    finally:
        stop_server(server)
