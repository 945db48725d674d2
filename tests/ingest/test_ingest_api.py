"""POST /v1/traces as OpenTelemetry exporters use it: formats, responses, refusals, idempotence."""

from __future__ import annotations

import gzip
import os
import time
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from prometheus_client.parser import text_string_to_metric_families

from driftline.ingest import envelope
from driftline.store import Store
from tests import factory as f
from tests.conftest import Collector

JSON = {"content-type": "application/json"}


@pytest.fixture
def store(backend_store: Store) -> Store:
    """The writer writes into each backend (tests/conftest.py's BACKENDS)."""
    return backend_store


def post(
    c: Collector,
    body: bytes,
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> Any:
    sent = {**f.PROTOBUF, **f.auth(key or c.ingest_key), **(headers or {})}
    return c.client.post("/v1/traces", content=body, headers=sent)


def metric(c: Collector, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(c.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def status_of(response: Any) -> Status:
    """The google.rpc.Status body OTLP/HTTP sends with every error, decoded per its type."""
    if response.headers["content-type"].startswith("application/x-protobuf"):
        return Status.FromString(response.content)
    document = response.json()
    return Status(code=document["code"], message=document["message"])


def rows(c: Collector, table: str = "llm_calls") -> list[dict[str, Any]]:
    extra = ", request_model, input_text" if table == "llm_calls" else ""
    return c.runtime.store.query(
        f"SELECT trace_id, span_id, service{extra} FROM {table} ORDER BY trace_id, span_id"
    )


def json_span(trace_id: str, span_id: str, name: str = "chat", **attrs: Any) -> dict[str, Any]:
    """A span as the OTLP/JSON encoding writes it: camelCase, hex ids, nanoseconds as strings."""
    start = time.time_ns()
    values = []
    for k, v in attrs.items():
        value = {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}
        values.append({"key": k.replace("__", "."), "value": value})
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_500_000_000),
        "attributes": values,
        "status": {"code": 1},
    }


def json_body(spans: list[dict[str, Any]], service: str = "json-app") -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeSpans": [{"scope": {"name": "js"}, "spans": spans}],
                }
            ]
        }
    )


# ---- accepted formats --------------------------------------------------------------------------


def test_protobuf_export_is_acknowledged_and_stored(collector: Collector) -> None:
    span = f.span(f.genai_attrs(prompt="Where is my parcel?"))
    r = post(collector, f.request([span], service="shop").SerializeToString())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert not reply.HasField("partial_success")

    assert collector.wait_stored() == 1
    (row,) = rows(collector)
    assert row["trace_id"] == span.trace_id.hex()
    assert row["span_id"] == span.span_id.hex()
    assert row["service"] == "shop"
    assert row["request_model"] == "gpt-4o-mini"
    assert row["input_text"] == "Where is my parcel?"
    assert metric(collector, "driftline_ingest_spans_accepted_total") == 1


def test_json_export_with_hex_ids(collector: Collector) -> None:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    body = json_body(
        [
            json_span(
                trace_id,
                span_id,
                gen_ai__operation__name="chat",
                gen_ai__request__model="claude-sonnet-4",
                gen_ai__usage__input_tokens=12,
            )
        ]
    )
    r = post(collector, body, {"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}

    assert collector.wait_stored() == 1
    (row,) = collector.runtime.store.query(
        "SELECT trace_id, span_id, service, request_model, input_tokens, duration_ms, status_code "
        "FROM llm_calls"
    )
    assert (row["trace_id"], row["span_id"]) == (trace_id, span_id)
    assert row["service"] == "json-app"
    assert row["request_model"] == "claude-sonnet-4"
    assert row["input_tokens"] == 12
    assert row["duration_ms"] == 1500
    assert row["status_code"] == "ok"


def test_gzip_protobuf_and_gzip_json(collector: Collector) -> None:
    proto_span = f.span(f.genai_attrs())
    r = post(
        collector,
        gzip.compress(f.request([proto_span]).SerializeToString()),
        {"content-encoding": "gzip"},
    )
    assert r.status_code == 200, r.content
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    body = json_body([json_span(trace_id, span_id, gen_ai__request__model="m")])
    r = post(collector, gzip.compress(body), {**JSON, "content-encoding": "gzip"})
    assert r.status_code == 200, r.text

    assert collector.wait_stored(count=2) == 2
    stored = {(row["trace_id"], row["span_id"]) for row in rows(collector)}
    assert stored == {(proto_span.trace_id.hex(), proto_span.span_id.hex()), (trace_id, span_id)}


def test_plain_spans_go_to_the_spans_table(collector: Collector) -> None:
    trace_id = os.urandom(16)
    root = f.span({"http.route": "/chat"}, trace_id=trace_id, name="POST /chat")
    call = f.span(f.genai_attrs(), trace_id=trace_id, parent=root.span_id)
    assert post(collector, f.request([root, call]).SerializeToString()).status_code == 200
    assert collector.wait_stored("spans") == 1
    assert collector.wait_stored("llm_calls") == 1
    assert rows(collector, "spans")[0]["span_id"] == root.span_id.hex()
    assert rows(collector)[0]["span_id"] == call.span_id.hex()


# ---- partial success ---------------------------------------------------------------------------


def test_partial_success_names_the_rejected_spans(collector: Collector) -> None:
    good = f.span(f.genai_attrs(), name="good")
    zero_trace = f.span(f.genai_attrs(), trace_id=bytes(16), name="zero-trace")
    short_span = f.span(f.genai_attrs(), span_id=b"\x01\x02\x03", name="short-span")
    body = f.request([zero_trace, good, short_span]).SerializeToString()
    r = post(collector, body)
    assert r.status_code == 200
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_spans == 2
    message = reply.partial_success.error_message
    assert "zero-trace" in message or "short-span" in message  # names a rejected span
    assert "2" in message

    assert collector.wait_stored() == 1
    collector.drain()
    assert [row["span_id"] for row in rows(collector)] == [good.span_id.hex()]
    assert (
        metric(collector, "driftline_ingest_spans_rejected_total", reason="invalid_trace_id") == 1
    )
    assert metric(collector, "driftline_ingest_spans_rejected_total", reason="invalid_span_id") == 1
    assert metric(collector, "driftline_ingest_spans_accepted_total") == 1


def test_spans_without_a_start_time_are_rejected_by_name(collector: Collector) -> None:
    unset = f.span(f.genai_attrs(), start_ns=0, name="no-start")
    beyond = f.span(f.genai_attrs(), start_ns=2**63, duration_ns=0, name="year-2262")
    r = post(collector, f.request([unset, beyond, f.span(f.genai_attrs())]).SerializeToString())
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_spans == 2
    assert "'no-start': invalid start time" in reply.partial_success.error_message
    assert collector.wait_stored() == 1


def test_partial_success_in_json(collector: Collector) -> None:
    good = json_span(os.urandom(16).hex(), os.urandom(8).hex(), gen_ai__request__model="m")
    bad = json_span(os.urandom(4).hex(), os.urandom(8).hex(), name="short-trace")
    r = post(collector, json_body([good, bad]), JSON)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "short-trace" in partial["errorMessage"]
    assert "trace" in partial["errorMessage"].lower()
    assert collector.wait_stored() == 1


# ---- refusals: size, format, media type --------------------------------------------------------


def test_body_over_max_body_bytes_is_413(collector_factory) -> None:
    c = collector_factory(max_body_bytes=2048)
    big = f.request([f.span(f.genai_attrs(prompt="p" * 5000))]).SerializeToString()
    r = post(c, big)
    assert r.status_code == 413
    assert "2048" in status_of(r).message

    def chunks():  # no Content-Length: the limit holds while streaming too
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    r = c.client.post(
        "/v1/traces", content=chunks(), headers={**f.PROTOBUF, **f.auth(c.ingest_key)}
    )
    assert r.status_code == 413
    assert "2048" in status_of(r).message

    small = f.request([f.span(f.genai_attrs())]).SerializeToString()
    assert post(c, small).status_code == 200
    assert metric(c, "driftline_ingest_requests_rejected_total", reason="too_large") == 2


def test_gzip_bomb_is_413(collector_factory) -> None:
    c = collector_factory(max_decompressed_bytes=1 << 20)
    bomb = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    assert len(bomb) < 2048 * 16
    r = post(c, bomb, {"content-encoding": "gzip"})
    assert r.status_code == 413
    assert "decompressed" in status_of(r).message


def test_malformed_protobuf_is_400_with_a_status_body(collector: Collector) -> None:
    r = post(collector, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/x-protobuf"
    status = status_of(r)
    assert "protobuf" in status.message
    assert status.code != 0


def test_malformed_json_is_400_naming_the_problem(collector: Collector) -> None:
    r = post(collector, b'{"resourceSpans": [', JSON)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert "JSON" in status_of(r).message

    r = post(collector, b'{"resourceSpans": {"oops": 1}}', JSON)
    assert r.status_code == 400
    assert "resourceSpans" in status_of(r).message

    span = json_span("not-hex-at-all", os.urandom(8).hex())
    r = post(collector, json_body([span]), JSON)
    assert r.status_code == 400
    assert "traceId" in status_of(r).message

    r = post(collector, b"[1, 2]", JSON)
    assert r.status_code == 400

    r = post(collector, gzip.compress(b"{}")[:-6], {**JSON, "content-encoding": "gzip"})
    assert r.status_code == 400
    assert "gzip" in status_of(r).message


def test_wrong_media_type_or_encoding_is_415(collector: Collector) -> None:
    body = f.request([f.span(f.genai_attrs())]).SerializeToString()
    r = post(collector, body, {"content-type": "text/plain"})
    assert r.status_code == 415
    assert "text/plain" in status_of(r).message

    r = post(collector, body, {"content-encoding": "br"})
    assert r.status_code == 415
    assert "'br'" in status_of(r).message
    collector.drain()
    assert rows(collector) == []


# ---- refusals: keys, roles, limits -------------------------------------------------------------


def test_missing_or_unknown_key_is_401(collector: Collector) -> None:
    body = f.request([f.span(f.genai_attrs())]).SerializeToString()
    r = collector.client.post("/v1/traces", content=body, headers=f.PROTOBUF)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in status_of(r).message

    for bad in ("dl_0123456789ab_" + "0" * 40, "not-a-key", collector.ingest_key + "x"):
        r = post(collector, body, key=bad)
        assert r.status_code == 401, bad
        assert "unknown" in status_of(r).message

    # The right key id with the wrong secret is refused too.
    key_id = collector.ingest_key.split("_")[1]
    assert post(collector, body, key=f"dl_{key_id}_{'f' * 40}").status_code == 401
    collector.drain()
    assert rows(collector) == []


def test_revoked_key_is_401(collector_factory) -> None:
    c = collector_factory(key_cache_seconds=0)
    admin = f.auth(c.admin_key)
    made = c.client.post(
        "/api/admin/keys", json={"project": "alpha", "role": "ingest"}, headers=admin
    )
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["key_id"]
    body = f.request([f.span(f.genai_attrs())]).SerializeToString()
    assert post(c, body, key=key).status_code == 200

    assert c.client.delete(f"/api/admin/keys/{key_id}", headers=admin).status_code == 200
    r = post(c, body, key=key)
    assert r.status_code == 401
    assert "revoked" in status_of(r).message
    assert post(c, body).status_code == 200  # the project's other ingest key still works


def test_wrong_role_is_403(collector: Collector) -> None:
    body = f.request([f.span(f.genai_attrs())]).SerializeToString()
    r = post(collector, body, key=collector.read_key)
    assert r.status_code == 403
    assert "read key" in status_of(r).message

    r = collector.client.get("/api/calls", headers=f.auth(collector.ingest_key))
    assert r.status_code == 403
    assert "ingest key" in r.json()["error"]
    r = collector.client.get(f"/api/traces/{'a' * 32}", headers=f.auth(collector.ingest_key))
    assert r.status_code == 403
    collector.drain()
    assert rows(collector) == []


def test_over_the_rate_limit_is_429_with_retry_after(collector_factory) -> None:
    c = collector_factory(rate_limit_per_second=1, rate_limit_burst=2)
    body = f.request([f.span(f.genai_attrs())]).SerializeToString()
    assert post(c, body).status_code == 200
    assert post(c, body).status_code == 200
    r = post(c, body)
    assert r.status_code == 429
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 2
    assert "rate limit" in status_of(r).message

    # Limits are per key: the read key is not held back by the ingest key's traffic.
    assert c.client.get("/api/calls", headers=f.auth(c.read_key)).status_code == 200
    time.sleep(wait)
    assert post(c, body).status_code == 200  # retrying after Retry-After succeeds


def test_wal_budget_exceeded_is_503_with_retry_after(collector_factory) -> None:
    c = collector_factory(ack="log", wal_budget_bytes=1048576)
    huge = f.request([f.span(f.genai_attrs(prompt="z" * 1_500_000))]).SerializeToString()
    r = post(c, huge)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert "budget" in status_of(r).message
    assert metric(c, "driftline_ingest_spans_rejected_total", reason="backlog_full") == 1

    # The refusal takes no space: normal batches still go through and are stored.
    small = f.span(f.genai_attrs())
    assert post(c, f.request([small]).SerializeToString()).status_code == 200
    assert c.wait_stored() == 1
    c.drain()
    assert [row["span_id"] for row in rows(c)] == [small.span_id.hex()]


def test_503_when_the_store_is_behind_and_the_log_is_full(collector_factory) -> None:
    c = collector_factory(ack="log", wal_budget_bytes=1048576)
    c.runtime.writer.stop(drain_timeout=0)  # the store stops taking rows
    batch = f.request([f.span(f.genai_attrs(prompt="w" * 300_000))]).SerializeToString()
    codes = [post(c, batch).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 503]
    assert c.runtime.writer.backlog_bytes() > 900_000  # the acknowledged batches are kept


# ---- idempotence -------------------------------------------------------------------------------


def test_same_batch_twice_is_stored_once(collector: Collector) -> None:
    trace_id = os.urandom(16)
    root = f.span({"http.route": "/ask"}, trace_id=trace_id, name="POST /ask")
    calls = [f.span(f.genai_attrs(), trace_id=trace_id, parent=root.span_id) for _ in range(3)]
    body = f.request([root, *calls]).SerializeToString()

    assert post(collector, body).status_code == 200
    collector.wait_stored(count=3)
    collector.drain()
    before = metric(collector, "driftline_store_duplicate_spans_skipped_total")

    assert post(collector, body).status_code == 200  # an exporter's retry
    collector.drain()
    count = collector.runtime.store.query("SELECT count() AS n FROM llm_calls")[0]["n"]
    assert count == 3
    assert collector.runtime.store.query("SELECT count() AS n FROM spans")[0]["n"] == 1
    assert metric(collector, "driftline_store_duplicate_spans_skipped_total") == before + 4

    listed = collector.client.get("/api/calls", headers=f.auth(collector.read_key)).json()
    assert len(listed["items"]) == 3


def test_same_span_twice_in_one_request_is_stored_once(collector: Collector) -> None:
    span = f.span(f.genai_attrs())
    other = f.span(f.genai_attrs())
    body = f.request([span, other, span]).SerializeToString()
    assert post(collector, body).status_code == 200
    collector.wait_stored(count=2)
    collector.drain()
    assert collector.runtime.store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 2
    assert metric(collector, "driftline_store_duplicate_spans_skipped_total") >= 1


def test_same_span_as_protobuf_then_json_is_stored_once(collector: Collector) -> None:
    span = f.span(f.genai_attrs())
    assert post(collector, f.request([span]).SerializeToString()).status_code == 200
    collector.wait_stored()
    collector.drain()
    again = json_span(span.trace_id.hex(), span.span_id.hex(), gen_ai__request__model="x")
    again["startTimeUnixNano"] = str(span.start_time_unix_nano)
    again["endTimeUnixNano"] = str(span.end_time_unix_nano)
    assert post(collector, json_body([again]), JSON).status_code == 200
    collector.drain()
    assert collector.runtime.store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 1
    assert metric(collector, "driftline_store_duplicate_spans_skipped_total") == 1


def test_a_record_the_decoder_cannot_read_is_set_aside_not_blocking(collector_factory) -> None:
    """A poison record goes to dead-letter/ with a metric; the spans after it are stored."""
    collector = collector_factory(ack="log")
    rt = collector.runtime
    poison = envelope.pack("alpha", b"\x0a\x05\xff\xff\xff\xff\xff")  # not a valid request
    rt.writer.wal.append(poison)
    good = f.request([f.span(f.genai_attrs(prompt="after the poison"))])
    response = collector.client.post(
        "/v1/traces",
        content=good.SerializeToString(),
        headers={**f.PROTOBUF, **f.auth(collector.ingest_key)},
    )
    assert response.status_code == 200
    assert collector.wait_stored("llm_calls", 1) == 1
    collector.drain()
    dead = list((rt.settings.data / "dead-letter").glob("*.otlp"))
    assert len(dead) == 1
    assert "driftline_writer_dead_letter_records_total 1.0" in collector.client.get("/metrics").text


def _structured(messages: list[dict[str, Any]]) -> AnyValue:
    """Messages as OTLP structured values (arrays of maps), as the conventions allow."""

    def value(v: Any) -> AnyValue:
        if isinstance(v, dict):
            return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=value(x))
                                                              for k, x in v.items()]))  # fmt: skip
        if isinstance(v, list):
            return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
        return AnyValue(string_value=str(v))

    return value(messages)


def test_structured_messages_on_attributes_and_events_are_kept(collector: Collector) -> None:
    question = [{"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]}]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "On its way."}],
               "finish_reason": "stop"}]  # fmt: skip
    on_attrs = f.span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    on_attrs.attributes.add(key="gen_ai.input.messages", value=_structured(question))
    on_attrs.attributes.add(key="gen_ai.output.messages", value=_structured(answer))
    on_event = f.span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    details = on_event.events.add(name="gen_ai.client.inference.operation.details")
    details.attributes.add(key="gen_ai.input.messages", value=_structured(question))
    details.attributes.add(key="gen_ai.output.messages", value=_structured(answer))
    assert post(collector, f.request([on_attrs, on_event]).SerializeToString()).status_code == 200
    assert collector.wait_stored("llm_calls", 2) == 2
    stored = collector.runtime.store.query(
        "SELECT input_text, output_text, finish_reasons FROM llm_calls"
    )
    assert (
        stored
        == [
            {
                "input_text": "Where is my order?",
                "output_text": "On its way.",
                "finish_reasons": ["stop"],
            }
        ]
        * 2
    )
