"""The read API, health, metrics and docs, as a dashboard or a script uses them."""

from __future__ import annotations

import base64
import os
import random
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from tests import factory as f
from tests.conftest import Collector

SECOND = 1_000_000_000


def send(c: Collector, spans: list[Span], service: str = "support-bot") -> None:
    r = c.client.post(
        "/v1/traces",
        content=f.request(spans, service=service).SerializeToString(),
        headers={**f.PROTOBUF, **f.auth(c.ingest_key)},
    )
    assert r.status_code == 200, r.content


def calls(c: Collector, **params: Any) -> list[dict[str, Any]]:
    r = c.client.get("/api/calls", params=params, headers=f.auth(c.read_key))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["span_name"] for item in items]


def iso(ns: int) -> str:
    """RFC 3339 with microseconds and a Z, as most clients write it."""
    moment = datetime.fromtimestamp(ns // SECOND, UTC) + timedelta(microseconds=ns % SECOND // 1000)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def seeded(collector: Collector) -> tuple[Collector, int]:
    """Three calls a minute apart from `base`, differing in service, model, status and text."""
    base = (time.time_ns() // SECOND - 3600) * SECOND
    shop = f.span(
        f.genai_attrs(
            prompt="Where is my PARCEL?",
            answer="It ships tomorrow.",
            **{"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"},
        ),
        name="shop-call",
        start_ns=base + 60 * SECOND,
    )
    shop.status.code = Status.STATUS_CODE_OK
    delayed = f.span(
        f.genai_attrs(
            prompt="Any news?", answer="Your parcel is delayed.", model="claude-3-5-haiku"
        ),
        name="delayed-call",
        start_ns=base + 120 * SECOND,
        error=True,
    )
    password = f.span(
        f.genai_attrs(prompt="How do I reset my password?", answer="Use the link."),
        name="password-call",
        start_ns=base + 180 * SECOND,
    )
    send(collector, [shop], service="shop")
    send(collector, [delayed, password], service="support")
    assert collector.wait_stored(count=3) == 3
    return collector, base


def test_calls_are_listed_newest_first_with_their_fields(seeded: tuple[Collector, int]) -> None:
    c, base = seeded
    items = calls(c)
    assert names(items) == ["password-call", "delayed-call", "shop-call"]
    shop = items[2]
    assert shop["type"] == "llm_call"
    assert shop["service"] == "shop"
    assert shop["request_model"] == "gpt-4o"
    assert shop["response_model"] == "gpt-4o-2024-08-06"
    assert shop["status_code"] == "ok"
    assert shop["input_text"] == "Where is my PARCEL?"
    assert shop["output_messages"][0]["parts"][0]["content"] == "It ships tomorrow."
    assert shop["start_time_unix_nano"] == base + 60 * SECOND
    assert shop["start_time"].startswith(iso(base + 60 * SECOND).removesuffix("Z"))
    assert shop["input_tokens"] == 120 and shop["output_tokens"] == 40
    assert items[1]["status_code"] == "error"


def test_time_range_in_rfc3339_and_unix_seconds(seeded: tuple[Collector, int]) -> None:
    c, base = seeded

    def t(seconds: int) -> int:
        return base + seconds * SECOND

    assert names(calls(c, since=iso(t(90)))) == ["password-call", "delayed-call"]
    assert names(calls(c, until=iso(t(150)))) == ["delayed-call", "shop-call"]
    assert names(calls(c, since=iso(t(90)), until=iso(t(150)))) == ["delayed-call"]
    unix = str(t(90) // SECOND), str(t(150) // SECOND)
    assert names(calls(c, since=unix[0], until=unix[1])) == ["delayed-call"]
    assert names(calls(c, since=f"{unix[0]}.5")) == ["password-call", "delayed-call"]
    # The same instant with another UTC offset, and without a zone (read as UTC).
    plus2 = datetime.fromtimestamp(t(150) // SECOND, timezone(timedelta(hours=2)))
    assert names(calls(c, until=plus2.isoformat())) == ["delayed-call", "shop-call"]
    naive = datetime.fromtimestamp(t(150) // SECOND, UTC).replace(tzinfo=None).isoformat()
    assert names(calls(c, until=naive)) == ["delayed-call", "shop-call"]
    # since is inclusive, until exclusive.
    assert names(calls(c, since=iso(t(120)), until=iso(t(180)))) == ["delayed-call"]
    assert calls(c, since=iso(t(500))) == []


def test_time_bounds_are_exact_to_the_microsecond(collector: Collector) -> None:
    base = (time.time_ns() // SECOND - 600) * SECOND
    starts = [base + i * SECOND + random.randrange(1, 999_999) * 1000 for i in range(8)]
    send(
        collector, [f.span(f.genai_attrs(), name=str(i), start_ns=s) for i, s in enumerate(starts)]
    )
    collector.wait_stored(count=8)
    for i, start in enumerate(starts):
        assert calls(collector, since=iso(start))[-1]["span_name"] == str(i), iso(start)
        after = calls(collector, until=iso(start))
        assert str(i) not in names(after), iso(start)
        seconds = f"{start // SECOND}.{start % SECOND // 1000:06d}"
        assert calls(collector, since=seconds)[-1]["span_name"] == str(i), seconds
    # An item's own start_time, nanoseconds and all, works as a bound too.
    newest = calls(collector, limit=1)[0]
    assert names(calls(collector, since=newest["start_time"])) == [newest["span_name"]]
    assert newest["span_name"] not in names(calls(collector, until=newest["start_time"]))


def test_model_service_status_and_text_filters(seeded: tuple[Collector, int]) -> None:
    c, _ = seeded
    assert names(calls(c, model="gpt-4o")) == ["shop-call"]  # the request model
    assert names(calls(c, model="gpt-4o-2024-08-06")) == ["shop-call"]  # the response model
    assert names(calls(c, model="gpt-4o-mini")) == ["password-call"]
    assert calls(c, model="gpt-4") == []  # exact, not a prefix
    assert names(calls(c, service="support")) == ["password-call", "delayed-call"]
    assert calls(c, service="nobody") == []
    assert names(calls(c, status="error")) == ["delayed-call"]
    assert names(calls(c, status="ok")) == ["shop-call"]
    assert names(calls(c, status="unset")) == ["password-call"]
    # Text search looks at input and output, whatever the case.
    assert names(calls(c, q="parcel")) == ["delayed-call", "shop-call"]
    assert names(calls(c, q="PASSWORD")) == ["password-call"]
    assert names(calls(c, q="ships TOMORROW")) == ["shop-call"]
    assert calls(c, q="refund") == []
    assert names(calls(c, service="support", q="parcel", status="error")) == ["delayed-call"]
    assert names(calls(c, operation="chat")) == ["password-call", "delayed-call", "shop-call"]


def test_cursor_pagination_yields_every_call_once(collector: Collector) -> None:
    base = (time.time_ns() // SECOND - 7200) * SECOND
    spans = []
    for i in range(25):  # five calls share each start time: the cursor must break ties
        spans.append(f.span(f.genai_attrs(), name=f"call-{i}", start_ns=base + (i // 5) * SECOND))
    random.shuffle(spans)
    send(collector, spans)
    assert collector.wait_stored(count=25) == 25

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = collector.client.get(
            "/api/calls", params=params, headers=f.auth(collector.read_key)
        ).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [item["span_id"] for page in pages for item in page]
    assert len(seen) == len(set(seen)) == 25
    assert {s.span_id.hex() for s in spans} == set(seen)
    starts = [item["start_time_unix_nano"] for page in pages for item in page]
    assert starts == sorted(starts, reverse=True)

    # A page exactly as long as what is left says there is no more.
    assert (
        collector.client.get(
            "/api/calls", params={"limit": 25}, headers=f.auth(collector.read_key)
        ).json()["next_cursor"]
        is None
    )


def _error(c: Collector, params: dict[str, Any]) -> str:
    r = c.client.get("/api/calls", params=params, headers=f.auth(c.read_key))
    assert r.status_code == 400, (params, r.status_code, r.text)
    return r.json()["error"]


def test_bad_parameters_are_400_naming_the_parameter(collector: Collector) -> None:
    assert "cursor" in _error(collector, {"cursor": "not-a-cursor"})
    forged = base64.urlsafe_b64encode(orjson.dumps([1, "x" * 32, "y" * 16])).decode()
    assert "cursor" in _error(collector, {"cursor": forged})
    odd = base64.urlsafe_b64encode(orjson.dumps([1, "a" * 32, ["a"] * 16])).decode()
    assert "cursor" in _error(collector, {"cursor": odd})
    huge = base64.urlsafe_b64encode(orjson.dumps([2**64 - 1, "a" * 32, "b" * 16])).decode()
    assert "cursor" in _error(collector, {"cursor": huge})
    assert "since" in _error(collector, {"since": "yesterday"})
    assert "until" in _error(collector, {"until": "2025-13-45T00:00:00Z"})
    assert "since" in _error(collector, {"since": "nan"})
    assert "since" in _error(collector, {"since": "1e30"})
    assert "until" in _error(collector, {"until": "9999-12-31T00:00:00Z"})
    assert "limit" in _error(collector, {"limit": 0})
    assert "limit" in _error(collector, {"limit": 1001})
    assert "limit" in _error(collector, {"limit": "ten"})
    assert "status" in _error(collector, {"status": "failed"})
    assert "q" in _error(collector, {"q": "x" * 501})


def test_odd_filter_values_are_answered_not_crashed(collector: Collector) -> None:
    send(collector, [f.span(f.genai_attrs(prompt="50% off 'quoted' \\ back"))])
    collector.wait_stored()
    for value in ("'", "\\", "%", "_", "a'b\\'c", "\x00", "{q:String}", "😀", "\\N"):
        for name in ("model", "service", "q"):
            r = collector.client.get(
                "/api/calls", params={name: value}, headers=f.auth(collector.read_key)
            )
            assert r.status_code == 200, (name, value, r.text)
    assert len(calls(collector, q="50% off 'quoted' \\")) == 1
    assert calls(collector, q="%") != []
    assert calls(collector, q="_") == []


def test_trace_returns_calls_and_spans_sorted_by_start(collector: Collector) -> None:
    trace_id = os.urandom(16)
    t0 = time.time_ns() - 60 * SECOND
    root = f.span({"http.route": "/chat"}, trace_id=trace_id, name="POST /chat", start_ns=t0)
    lookup = f.span(
        {"db.system": "postgresql"},
        trace_id=trace_id,
        parent=root.span_id,
        name="SELECT orders",
        start_ns=t0 + 10_000_000,
    )
    first = f.span(
        f.genai_attrs(), trace_id=trace_id, parent=root.span_id, name="plan", start_ns=t0 + 20_000
    )
    second = f.span(
        f.genai_attrs(answer="done"),
        trace_id=trace_id,
        parent=root.span_id,
        name="answer",
        start_ns=t0 + 900_000_000,
    )
    other_trace = f.span(f.genai_attrs(), name="elsewhere")
    send(collector, [second, lookup, other_trace])
    send(collector, [first, root], service="gateway")
    collector.wait_stored(count=3)
    collector.wait_stored("spans", count=2)

    for shown in (trace_id.hex(), trace_id.hex().upper()):
        r = collector.client.get(f"/api/traces/{shown}", headers=f.auth(collector.read_key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["trace_id"] == trace_id.hex()
        spans = body["spans"]
        assert names(spans) == ["POST /chat", "plan", "SELECT orders", "answer"]
        assert [s["type"] for s in spans] == ["span", "llm_call", "span", "llm_call"]
        assert {s["parent_span_id"] for s in spans[1:]} == {root.span_id.hex()}
        assert spans[0]["kind"] == "client" and spans[0]["service"] == "gateway"
        assert spans[3]["output_text"] == "done"


def test_unknown_trace_is_404_and_malformed_id_is_400(collector: Collector) -> None:
    read = f.auth(collector.read_key)
    r = collector.client.get(f"/api/traces/{os.urandom(16).hex()}", headers=read)
    assert r.status_code == 404
    assert "no trace" in r.json()["error"]
    for bad in ("xyz", "a" * 31, "g" * 32, "a" * 33):
        r = collector.client.get(f"/api/traces/{bad}", headers=read)
        assert r.status_code == 400, bad
        assert "32 hex" in r.json()["error"]


def test_read_api_needs_a_key(collector: Collector) -> None:
    assert collector.client.get("/api/calls").status_code == 401
    assert collector.client.get(f"/api/traces/{'a' * 32}").status_code == 401
    assert collector.client.get("/api/calls", headers=f.auth("dl_bad")).status_code == 401
    assert (
        collector.client.get("/api/calls", headers=f.auth(collector.admin_key)).status_code == 200
    )


def test_health_and_readiness(collector: Collector) -> None:
    r = collector.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = collector.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["problems"] == []
    assert r.json()["wal_backlog_bytes"] == 0


def _samples(c: Collector) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = c.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if "le" in labels:  # "5", "5.0" and "+Inf" are all fine in the exposition format
                labels["le"] = repr(float(labels["le"]))
            found.setdefault(sample.name, []).append((labels, sample.value))
    return found


def _value(samples: dict, name: str, **labels: str) -> float:
    matching = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert matching, (name, labels, samples.get(name))
    return sum(matching)


def test_metrics_expose_ingest_llm_and_backlog_series(collector: Collector) -> None:
    trace_id = os.urandom(16)
    mini = f.span(f.genai_attrs(), trace_id=trace_id, duration_ns=250_000_000)
    slow = f.span(
        f.genai_attrs(model="claude-3-5-haiku", **{"gen_ai.usage.input_tokens": 1000}),
        trace_id=trace_id,
        duration_ns=3 * SECOND,
    )
    plain = f.span({"http.route": "/x"}, trace_id=trace_id, name="GET /x")
    send(collector, [mini, plain])
    send(collector, [slow], service="batch-job")
    collector.wait_stored(count=2)
    collector.drain()

    m = _samples(collector)
    assert _value(m, "driftline_ingest_spans_accepted_total") == 3
    assert _value(m, "driftline_wal_backlog_bytes") == 0
    tokens = "driftline_llm_tokens_total"
    assert _value(m, tokens, model="gpt-4o-mini", service="support-bot", type="input") == 120
    assert _value(m, tokens, model="claude-3-5-haiku", service="batch-job", type="input") == 1000
    assert _value(m, tokens, model="gpt-4o-mini", type="output") == 40
    hist = "driftline_llm_request_duration_seconds"
    assert _value(m, f"{hist}_count", model="gpt-4o-mini", service="support-bot") == 1
    assert _value(m, f"{hist}_sum", model="claude-3-5-haiku") == pytest.approx(3.0)
    assert _value(m, f"{hist}_bucket", model="gpt-4o-mini", le="0.25") == 1
    assert _value(m, f"{hist}_bucket", model="claude-3-5-haiku", le="2.5") == 0
    assert _value(m, f"{hist}_bucket", model="claude-3-5-haiku", le="5.0") == 1
    assert _value(m, f"{hist}_bucket", model="claude-3-5-haiku", le="inf") == 1
    # No per-trace labels: a trace id never becomes a series.
    assert trace_id.hex() not in collector.client.get("/metrics").text


def test_backlog_gauge_follows_the_log(collector: Collector) -> None:
    collector.runtime.writer.stop(drain_timeout=0)
    send(collector, [f.span(f.genai_attrs())])
    backlog = _value(_samples(collector), "driftline_wal_backlog_bytes")
    assert backlog == collector.runtime.writer.backlog_bytes() > 0
    assert collector.client.get("/readyz").json()["wal_backlog_bytes"] == backlog


def test_docs_and_openapi_are_served(collector: Collector) -> None:
    r = collector.client.get("/docs")
    assert r.status_code == 200
    assert "swagger" in r.text.lower()
    spec = collector.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "driftline collector"
    for path in ("/v1/traces", "/api/calls", "/api/traces/{trace_id}", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    params = {p["name"] for p in spec["paths"]["/api/calls"]["get"]["parameters"]}
    assert {"since", "until", "model", "service", "status", "q", "limit", "cursor"} <= params
