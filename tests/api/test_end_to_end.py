"""A real `driftline serve` process fed by the official OpenTelemetry OTLP/HTTP exporter."""

from __future__ import annotations

import json
import time

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.conftest import ServerProcess
from tests.factory import auth


def _poll(url: str, key: str, params: dict[str, str], want: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        items = httpx.get(f"{url}/api/calls", params=params, headers=auth(key)).json()["items"]
        if len(items) >= want or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def test_official_exporter_spans_are_listed_within_a_second(server: ServerProcess) -> None:
    assert server.ingest_key.startswith("dl_") and server.read_key.startswith("dl_")
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    exporter = OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces", headers={"authorization": f"Bearer {server.ingest_key}"}
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    with (
        tracer.start_as_current_span("answer question") as root,
        tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 50,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Reset password?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Use the link."}]}]
                ),
            },
        ),
    ):
        pass
    sent = time.monotonic()
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")

    items = _poll(server.url, server.read_key, {"service": "support-bot"}, want=1)
    assert time.monotonic() - sent < 5
    assert len(items) == 1
    call = items[0]
    assert call["trace_id"] == trace_id
    assert call["request_model"] == "gpt-4o"
    assert call["response_model"] == "gpt-4o-2024-08-06"
    assert (call["input_tokens"], call["output_tokens"]) == (100, 50)
    assert call["cost_usd"] == 0.00075  # gpt-4o list price: 2.50 / 10.00 USD per 1M tokens
    assert call["input_text"] == "Reset password?"
    assert call["output_text"] == "Use the link."
    assert call["finish_reasons"] == ["stop"]

    trace = httpx.get(f"{server.url}/api/traces/{trace_id}", headers=auth(server.read_key)).json()
    assert [(s["type"], s["span_name"]) for s in trace["spans"]] == [
        ("span", "answer question"),
        ("llm_call", "chat gpt-4o"),
    ]
    assert trace["spans"][1]["parent_span_id"] == trace["spans"][0]["span_id"]


def test_server_answers_health_docs_and_metrics(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/traces", "/api/calls", "/api/traces/{trace_id}"} <= set(paths)
    assert "driftline_wal_backlog_bytes" in httpx.get(f"{server.url}/metrics").text
