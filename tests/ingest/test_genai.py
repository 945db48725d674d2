"""The span mapping: what each instrumentation's attributes become in `llm_calls` and `spans`.

Spans go the way they go in production: packed into write-ahead log records, decoded by
SpanDecoder on chDB, and inserted into the real tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from driftline.api.config import load_settings
from driftline.ingest import envelope
from driftline.ingest.mapping import SpanDecoder
from driftline.ingest.pricing import Price, PriceTable
from driftline.store import Store, migrate, open_store
from tests import factory

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")
PARENT = bytes.fromhex("00f067aa0ba902b7")
START = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MAX_U32 = 2**32 - 1


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One chDB for the module (one session per process; the module closes it)."""
    store = open_store(tmp_path_factory.mktemp("genai") / "data")
    migrate(store)
    yield store
    store.close()


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


class Mapper:
    """Decode requests as the writer does, check the rows insert, and hand them back as dicts."""

    def __init__(self, engine: Store, spool: Path, prices: PriceTable | None = None) -> None:
        self.engine = engine
        self.decoder = SpanDecoder(engine, spool, prices or PriceTable())

    def map(
        self, *requests: ExportTraceServiceRequest, project: str = "alpha"
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        batch = self.decoder.decode(
            [envelope.pack(project, r.SerializeToString()) for r in requests]
        )
        for table, rows in (("llm_calls", batch.llm_calls), ("spans", batch.spans)):
            if rows.num_rows:
                self.engine.insert_arrow(table, rows)  # every row must fit its table
        return rows_of(batch.llm_calls), rows_of(batch.spans)


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    for name in ("start_time", "end_time"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(i).cast(pa.int64()))
    rows = table.to_pylist()
    for row in rows:
        for name in ("attributes", "resource_attributes"):
            row[name] = dict(row[name])
    return rows


@pytest.fixture
def mapper(engine: Store, spool: Path) -> Mapper:
    return Mapper(engine, spool)


def text_message(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}], **extra}


def event(name: str, attrs: dict[str, Any] | None = None, at: int = START) -> Span.Event:
    return Span.Event(name=name, time_unix_nano=at, attributes=factory.kvs(attrs or {}))


def kvlist(**fields: Any) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=factory.kvs(fields)))


def with_resource(
    request: ExportTraceServiceRequest, resource: dict[str, Any]
) -> ExportTraceServiceRequest:
    del request.resource_spans[0].resource.attributes[:]
    request.resource_spans[0].resource.attributes.extend(factory.kvs(resource))
    return request


def llm_by_name(mapper: Mapper, cases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Several spans in one batch (a decode costs a chDB query): `llm_calls` rows by span name."""
    spans = [factory.span(attrs, name=name, start_ns=START) for name, attrs in cases.items()]
    calls, plain = mapper.map(factory.request(spans))
    assert plain == []
    return {row["span_name"]: row for row in calls}


def llm_of(mapper: Mapper, attrs: dict[str, Any], **span_kw: Any) -> dict[str, Any]:
    """The one `llm_calls` row the span becomes."""
    span_kw.setdefault("start_ns", START)
    calls, spans = mapper.map(factory.request([factory.span(attrs, **span_kw)]))
    assert spans == []
    assert len(calls) == 1
    return calls[0]


def plain_of(mapper: Mapper, attrs: dict[str, Any], **span_kw: Any) -> dict[str, Any]:
    """The one `spans` row the span becomes."""
    span_kw.setdefault("start_ns", START)
    calls, spans = mapper.map(factory.request([factory.span(attrs, **span_kw)]))
    assert calls == []
    assert len(spans) == 1
    return spans[0]


# --- current OTel GenAI conventions ---------------------------------------------------------


def test_current_conventions_chat_call_maps_every_column(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        prompt="How do I reset my password?",
        answer="Click 'Forgot password'.",
        model="gpt-4o-mini",
        **{"gen_ai.conversation.id": "conv-42", "gen_ai.agent.name": "support-agent"},
    )
    row = llm_of(
        mapper, attrs, trace_id=TRACE, span_id=SPAN, parent=PARENT, name="chat gpt-4o-mini"
    )

    assert row["project_id"] == "alpha"
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert row["span_id"] == "b7ad6b7169203331"
    assert row["parent_span_id"] == "00f067aa0ba902b7"
    assert row["start_time"] == START
    assert row["end_time"] == START + 250_000_000
    assert row["duration_ms"] == 250.0
    assert row["service"] == "support-bot"
    assert row["service_version"] == ""
    assert row["environment"] == ""
    assert row["span_name"] == "chat gpt-4o-mini"
    assert row["status_code"] == "unset"
    assert row["status_message"] == ""
    assert row["resource_attributes"] == {"service.name": "support-bot"}
    assert row["operation"] == "chat"
    assert row["provider"] == "openai"
    assert row["request_model"] == "gpt-4o-mini"
    assert row["response_model"] == "gpt-4o-mini"
    assert row["input_tokens"] == 120
    assert row["output_tokens"] == 40
    assert row["total_tokens"] == 160
    # gpt-4o-mini: $0.15 / $0.60 per million tokens
    assert row["cost_usd"] == pytest.approx(120 * 0.15e-6 + 40 * 0.60e-6, rel=1e-12)
    assert row["finish_reasons"] == ["stop"]
    assert row["error_type"] == ""
    assert row["conversation_id"] == "conv-42"
    assert row["user_id"] == ""
    assert row["agent_name"] == "support-agent"
    # canonical message JSON is stored byte for byte as the client sent it
    assert row["input_messages"] == attrs["gen_ai.input.messages"]
    assert row["output_messages"] == attrs["gen_ai.output.messages"]
    assert row["input_text"] == "How do I reset my password?"
    assert row["output_text"] == "Click 'Forgot password'."


def test_body_attributes_are_not_duplicated_into_the_attribute_map(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        **{
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be kind."}]),
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.stream": True,
        }
    )
    row = llm_of(mapper, attrs)
    assert row["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": "120",
        "gen_ai.usage.output_tokens": "40",
        "gen_ai.response.finish_reasons": '["stop"]',
        "gen_ai.request.temperature": "0.2",
        "gen_ai.request.stream": "true",
    }


def test_response_model_falls_back_to_request_model(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(model="gpt-4o")
    del attrs["gen_ai.response.model"]
    row = llm_of(mapper, attrs)
    assert row["request_model"] == "gpt-4o"
    assert row["response_model"] == "gpt-4o"


def test_system_instructions_become_a_leading_system_message_kept_out_of_input_text(
    mapper: Mapper,
) -> None:
    attrs = factory.genai_attrs(
        prompt="Hello",
        **{"gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}])},
    )
    row = llm_of(mapper, attrs)
    assert json.loads(row["input_messages"]) == [
        text_message("system", "Be brief."),
        text_message("user", "Hello"),
    ]
    assert row["input_text"] == "Hello"


def test_input_messages_in_chat_completions_shape_are_normalised_to_parts(
    mapper: Mapper,
) -> None:
    attrs = factory.genai_attrs(
        **{
            "gen_ai.input.messages": json.dumps(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "content": "Hello!", "finish_reason": "stop"}]
            ),
        }
    )
    del attrs["gen_ai.response.finish_reasons"]
    row = llm_of(mapper, attrs)
    assert json.loads(row["input_messages"]) == [
        text_message("system", "Be brief."),
        text_message("user", "Hi"),
    ]
    assert json.loads(row["output_messages"]) == [
        text_message("assistant", "Hello!", finish_reason="stop")
    ]
    assert row["input_text"] == "Hi"
    assert row["output_text"] == "Hello!"
    assert row["finish_reasons"] == ["stop"]


def test_text_parts_are_joined_and_non_text_parts_kept_but_not_in_text(mapper: Mapper) -> None:
    output = [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me check."},
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"q": "x"}},
                {"type": "text", "content": "Done."},
            ],
            "finish_reason": "tool_call",
        }
    ]
    attrs = factory.genai_attrs(**{"gen_ai.output.messages": json.dumps(output)})
    del attrs["gen_ai.response.finish_reasons"]
    row = llm_of(mapper, attrs)
    assert json.loads(row["output_messages"]) == output
    assert row["output_text"] == "Let me check.\nDone."
    assert row["finish_reasons"] == ["tool_call"]  # read from the output messages


def test_messages_as_an_array_attribute_are_stored_as_json(mapper: Mapper) -> None:
    # some SDKs send the messages as an array of strings rather than one JSON string
    attrs = factory.genai_attrs(**{"gen_ai.input.messages": ["first question", "second one"]})
    row = llm_of(mapper, attrs)
    assert json.loads(row["input_messages"]) == [
        text_message("user", "first question"),
        text_message("user", "second one"),
    ]
    assert row["input_text"] == "first question\nsecond one"


def test_explicit_finish_reasons(mapper: Mapper) -> None:
    cases = {
        "array": (["stop", "length"], ["stop", "length"]),
        "json": ('["content_filter"]', ["content_filter"]),
        "one": ("length", ["length"]),
    }
    rows = llm_by_name(
        mapper,
        {
            name: factory.genai_attrs(**{"gen_ai.response.finish_reasons": sent})
            for name, (sent, _) in cases.items()
        },
    )
    assert {n: r["finish_reasons"] for n, r in rows.items()} == {
        n: expected for n, (_, expected) in cases.items()
    }


def test_error_type_attribute_is_taken_as_is(mapper: Mapper) -> None:
    row = llm_of(mapper, factory.genai_attrs(**{"error.type": "timeout"}))
    assert row["error_type"] == "timeout"
    assert row["status_code"] == "unset"


def test_error_status_takes_the_type_of_the_exception_event(mapper: Mapper) -> None:
    exc = event(
        "exception",
        {"exception.type": "openai.RateLimitError", "exception.message": "slow down"},
    )
    row = llm_of(mapper, factory.genai_attrs(), error=True, events=[exc])
    assert row["status_code"] == "error"
    assert row["error_type"] == "openai.RateLimitError"


def test_error_status_without_a_type_is_other(mapper: Mapper) -> None:
    row = llm_of(mapper, factory.genai_attrs(), error=True)
    assert row["status_code"] == "error"
    assert row["error_type"] == "_OTHER"


def test_error_type_attribute_beats_the_exception_event(mapper: Mapper) -> None:
    exc = event("exception", {"exception.type": "ValueError"})
    row = llm_of(mapper, factory.genai_attrs(**{"error.type": "500"}), error=True, events=[exc])
    assert row["error_type"] == "500"


def test_ok_status_has_no_error_type(mapper: Mapper) -> None:
    s = factory.span(factory.genai_attrs(), start_ns=START)
    s.status.code = Status.STATUS_CODE_OK
    (row,), _ = mapper.map(factory.request([s]))
    assert row["status_code"] == "ok"
    assert row["error_type"] == ""


def test_token_counts_of_odd_types_are_coerced_into_uint32(mapper: Mapper) -> None:
    cases: dict[str, tuple[Any, int]] = {
        "numeric string": ("100", 100),
        "whole double": (120.0, 120),  # JavaScript SDKs may send whole numbers as doubles
        "negative": (-5, 0),
        "huge": (2**40, MAX_U32),
        "words": ("lots", 0),
        "empty": ("", 0),
        "nan": (float("nan"), 0),
        "inf": (float("inf"), 0),
        "-inf": (float("-inf"), 0),
        "array": ([1, 2], 0),
    }
    rows = llm_by_name(
        mapper,
        {
            name: factory.genai_attrs(
                **{"gen_ai.usage.input_tokens": sent, "gen_ai.usage.output_tokens": 7}
            )
            for name, (sent, _) in cases.items()
        },
    )
    got = {n: (r["input_tokens"], r["output_tokens"], r["total_tokens"]) for n, r in rows.items()}
    assert got == {n: (want, 7, min(want + 7, MAX_U32)) for n, (_, want) in cases.items()}


def test_total_tokens_saturate_instead_of_overflowing(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        **{"gen_ai.usage.input_tokens": 2**33, "gen_ai.usage.output_tokens": 2**33}
    )
    row = llm_of(mapper, attrs)
    assert row["input_tokens"] == row["output_tokens"] == row["total_tokens"] == MAX_U32


# --- cost ------------------------------------------------------------------------------------


def test_dated_snapshot_is_priced_as_its_base_model(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        model="gpt-4o-2024-08-06",
        **{"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50},
    )
    row = llm_of(mapper, attrs)
    # gpt-4o: $2.50 in, $10 out per million: 100 * 2.5e-6 + 50 * 1e-5
    assert row["cost_usd"] == pytest.approx(0.00075, rel=1e-12)


def test_price_lookup(mapper: Mapper) -> None:
    cases = {
        "gpt-4o-mini-2024-07-18": (0.15, 0.60),  # the longest known prefix wins
        "openai/gpt-4o": (2.50, 10.0),  # provider prefix dropped
        "GPT-4o": (2.50, 10.0),
        "claude-sonnet-4-5-20250929": (3.0, 15.0),
        "claude-3-5-haiku@20241022": (0.80, 4.0),
        "gpt-4oops": (0.0, 0.0),  # a prefix without a separator is another model
        "my-own-model": (0.0, 0.0),
    }
    tokens = {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 2000}
    rows = llm_by_name(mapper, {m: factory.genai_attrs(model=m, **tokens) for m in cases})
    assert {m: r["cost_usd"] for m, r in rows.items()} == pytest.approx(
        {m: (1000 * i + 2000 * o) / 1e6 for m, (i, o) in cases.items()}, rel=1e-12, abs=1e-15
    )


def test_cost_uses_the_response_model(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        **{
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 1_000_000,
            "gen_ai.usage.output_tokens": 0,
        }
    )
    assert llm_of(mapper, attrs)["cost_usd"] == pytest.approx(0.15, rel=1e-12)


def test_explicit_cost_attribute_beats_the_price_table(mapper: Mapper) -> None:
    row = llm_of(mapper, factory.genai_attrs(model="gpt-4o", **{"gen_ai.usage.cost": 0.5}))
    assert row["cost_usd"] == 0.5


def test_configured_prices_add_models_and_override_list_prices(engine: Store, spool: Path) -> None:
    settings = load_settings(
        None,
        prices={
            "acme-chat": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "GPT-4o": {"input_per_mtok": 5.0, "output_per_mtok": 20.0},
        },
    )
    mapper = Mapper(engine, spool, PriceTable({k: v.price() for k, v in settings.prices.items()}))
    tokens = {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500}
    own = llm_of(mapper, factory.genai_attrs(model="acme-chat-v2", **tokens))
    assert own["cost_usd"] == pytest.approx(0.002, rel=1e-12)
    overridden = llm_of(mapper, factory.genai_attrs(model="gpt-4o-2024-08-06", **tokens))
    assert overridden["cost_usd"] == pytest.approx(0.015, rel=1e-12)
    untouched = llm_of(mapper, factory.genai_attrs(model="gpt-4o-mini", **tokens))
    assert untouched["cost_usd"] == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6, rel=1e-12)


def test_price_override_for_a_local_model(engine: Store, spool: Path) -> None:
    mapper = Mapper(engine, spool, PriceTable({"Local-Llama": Price(0.0, 1.0)}))
    tokens = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1_000_000}
    row = llm_of(mapper, factory.genai_attrs(model="local-llama:8b", **tokens))
    assert row["cost_usd"] == pytest.approx(1.0, rel=1e-12)


# --- deprecated GenAI names (OpenLLMetry and older SDKs) -------------------------------------


def test_deprecated_system_and_usage_names(mapper: Mapper) -> None:
    attrs = {
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.prompt_tokens": 300,
        "gen_ai.usage.completion_tokens": 100,
    }
    row = llm_of(mapper, attrs)
    assert row["provider"] == "anthropic"
    assert row["operation"] == "chat"
    assert row["request_model"] == row["response_model"] == "claude-3-5-haiku-20241022"
    assert row["input_tokens"] == 300
    assert row["output_tokens"] == 100
    assert row["total_tokens"] == 400
    assert row["cost_usd"] == pytest.approx(300 * 0.8e-6 + 100 * 4e-6, rel=1e-12)
    assert row["input_messages"] == row["output_messages"] == ""
    assert row["input_text"] == row["output_text"] == ""
    assert row["finish_reasons"] == []


def test_current_names_beat_deprecated_ones(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(
        **{
            "gen_ai.system": "az.ai.openai",
            "gen_ai.usage.prompt_tokens": 999,
            "gen_ai.usage.completion_tokens": 999,
        }
    )
    row = llm_of(mapper, attrs)
    assert row["provider"] == "openai"
    assert row["input_tokens"] == 120
    assert row["output_tokens"] == 40


def test_deprecated_prompt_and_completion_as_plain_strings(mapper: Mapper) -> None:
    row = llm_of(
        mapper,
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.prompt": "What is 2+2?",
            "gen_ai.completion": "4",
        },
    )
    assert json.loads(row["input_messages"]) == [text_message("user", "What is 2+2?")]
    assert json.loads(row["output_messages"]) == [text_message("assistant", "4")]
    assert row["input_text"] == "What is 2+2?"
    assert row["output_text"] == "4"
    assert row["attributes"] == {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}


def test_deprecated_prompt_and_completion_as_json(mapper: Mapper) -> None:
    row = llm_of(
        mapper,
        {
            "gen_ai.system": "openai",
            "gen_ai.prompt": json.dumps(
                [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
            ),
            "gen_ai.completion": json.dumps(
                [{"role": "assistant", "content": "4", "finish_reason": "stop"}]
            ),
        },
    )
    assert json.loads(row["input_messages"]) == [
        text_message("system", "Be terse."),
        text_message("user", "2+2?"),
    ]
    assert json.loads(row["output_messages"]) == [
        text_message("assistant", "4", finish_reason="stop")
    ]
    assert row["input_text"] == "2+2?"
    assert row["output_text"] == "4"
    assert row["finish_reasons"] == ["stop"]


def test_openllmetry_indexed_prompt_and_completion(mapper: Mapper) -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are a helpful assistant.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Tell me a joke",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Why did the chicken cross the road?",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.prompt_tokens": 20,
        "gen_ai.usage.completion_tokens": 9,
        "llm.usage.total_tokens": 29,
    }
    row = llm_of(mapper, attrs)
    assert row["operation"] == "chat"
    assert row["provider"] == "OpenAI"
    assert row["response_model"] == "gpt-4o-mini-2024-07-18"
    assert json.loads(row["input_messages"]) == [
        text_message("system", "You are a helpful assistant."),
        text_message("user", "Tell me a joke"),
    ]
    assert json.loads(row["output_messages"]) == [
        text_message("assistant", "Why did the chicken cross the road?", finish_reason="stop")
    ]
    assert row["input_text"] == "Tell me a joke"
    assert row["output_text"] == "Why did the chicken cross the road?"
    assert row["finish_reasons"] == ["stop"]
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (20, 9, 29)
    assert row["attributes"] == {
        "llm.request.type": "chat",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.prompt_tokens": "20",
        "gen_ai.usage.completion_tokens": "9",
        "llm.usage.total_tokens": "29",
    }


def test_openllmetry_completion_without_role_defaults_to_assistant(mapper: Mapper) -> None:
    row = llm_of(
        mapper,
        {
            "gen_ai.system": "openai",
            "gen_ai.prompt.0.content": "Hi",
            "gen_ai.completion.0.content": "Hello",
        },
    )
    assert json.loads(row["input_messages"]) == [text_message("user", "Hi")]
    assert json.loads(row["output_messages"]) == [text_message("assistant", "Hello")]


def test_legacy_request_type_names_the_operation(mapper: Mapper) -> None:
    cases = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
    rows = llm_by_name(mapper, {t: {"llm.request.type": t} for t in cases})
    assert {t: r["operation"] for t, r in rows.items()} == cases


def test_operation_name_beats_legacy_request_type(mapper: Mapper) -> None:
    row = llm_of(mapper, {"gen_ai.operation.name": "embeddings", "llm.request.type": "chat"})
    assert row["operation"] == "embeddings"


# --- OpenInference ---------------------------------------------------------------------------


def test_openinference_llm_span(mapper: Mapper) -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.token_count.prompt": 12,
        "llm.token_count.completion": 5,
        "llm.token_count.total": 17,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Answer in French.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Hello",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Bonjour",
        "input.value": json.dumps({"messages": [{"role": "user", "content": "ignored"}]}),
        "input.mime_type": "application/json",
        "output.value": "Bonjour",
        "session.id": "session-7",
        "user.id": "user-9",
    }
    row = llm_of(mapper, attrs)
    assert row["operation"] == "chat"
    assert row["provider"] == "openai"
    assert row["request_model"] == row["response_model"] == "gpt-4o-mini"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (12, 5, 17)
    assert row["cost_usd"] == pytest.approx(12 * 0.15e-6 + 5 * 0.6e-6, rel=1e-12)
    # the flattened messages are richer than input.value, so they win
    assert json.loads(row["input_messages"]) == [
        text_message("system", "Answer in French."),
        text_message("user", "Hello"),
    ]
    assert json.loads(row["output_messages"]) == [text_message("assistant", "Bonjour")]
    assert row["input_text"] == "Hello"
    assert row["output_text"] == "Bonjour"
    assert row["conversation_id"] == "session-7"
    assert row["user_id"] == "user-9"
    assert row["attributes"] == {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.token_count.prompt": "12",
        "llm.token_count.completion": "5",
        "llm.token_count.total": "17",
        "input.mime_type": "application/json",
        "session.id": "session-7",
        "user.id": "user-9",
    }


def test_openinference_input_and_output_values(mapper: Mapper) -> None:
    row = llm_of(
        mapper,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "claude-3-haiku-20240307",
            "input.value": json.dumps(
                {"model": "claude-3-haiku", "messages": [{"role": "user", "content": "Hi"}]}
            ),
            "output.value": "Hello there",
        },
    )
    assert json.loads(row["input_messages"]) == [text_message("user", "Hi")]
    assert json.loads(row["output_messages"]) == [text_message("assistant", "Hello there")]
    assert row["input_text"] == "Hi"
    assert row["output_text"] == "Hello there"


def test_openinference_embedding_span(mapper: Mapper) -> None:
    row = llm_of(mapper, {"openinference.span.kind": "EMBEDDING", "embedding.model_name": "x"})
    assert row["operation"] == "embeddings"


def test_openinference_chain_span_is_not_a_model_call(mapper: Mapper) -> None:
    attrs = {
        "openinference.span.kind": "CHAIN",
        "input.value": "What is the refund policy?",
        "output.value": "30 days.",
        "session.id": "s1",
    }
    row = plain_of(mapper, attrs, name="RetrievalQA")
    # spans keep every attribute: nothing was lifted into message columns
    assert row["attributes"] == attrs
    assert row["span_name"] == "RetrievalQA"


def test_gen_ai_conversation_id_beats_session_id(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(**{"gen_ai.conversation.id": "c1", "session.id": "s1"})
    assert llm_of(mapper, attrs)["conversation_id"] == "c1"


# --- content on span events ------------------------------------------------------------------


def test_content_events_of_the_deprecated_conventions(mapper: Mapper) -> None:
    events = [
        event("gen_ai.content.prompt", {"gen_ai.prompt": "Translate 'cat'"}),
        event("gen_ai.content.completion", {"gen_ai.completion": "chat"}),
    ]
    attrs = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    row = llm_of(mapper, attrs, events=events)
    assert json.loads(row["input_messages"]) == [text_message("user", "Translate 'cat'")]
    assert json.loads(row["output_messages"]) == [text_message("assistant", "chat")]
    assert row["input_text"] == "Translate 'cat'"
    assert row["output_text"] == "chat"
    assert row["attributes"] == attrs


def test_content_events_in_openllmetry_indexed_form(mapper: Mapper) -> None:
    events = [
        event(
            "gen_ai.content.prompt",
            {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi"},
        ),
        event(
            "gen_ai.content.completion",
            {"gen_ai.completion.0.content": "Hello", "gen_ai.completion.0.finish_reason": "stop"},
        ),
    ]
    row = llm_of(mapper, {"gen_ai.system": "openai"}, events=events)
    assert json.loads(row["input_messages"]) == [text_message("user", "Hi")]
    assert json.loads(row["output_messages"]) == [
        text_message("assistant", "Hello", finish_reason="stop")
    ]
    assert row["finish_reasons"] == ["stop"]


def test_message_and_choice_events(mapper: Mapper) -> None:
    choice = event("gen_ai.choice", {"finish_reason": "length", "index": 0})
    choice.attributes.append(KeyValue(key="message", value=kvlist(role="assistant", content="Par")))
    events = [
        event("gen_ai.system.message", {"content": "Be brief."}),
        event("gen_ai.user.message", {"content": "Write an essay"}),
        choice,
    ]
    row = llm_of(mapper, {"gen_ai.provider.name": "openai"}, events=events)
    assert json.loads(row["input_messages"]) == [
        text_message("system", "Be brief."),
        text_message("user", "Write an essay"),
    ]
    assert json.loads(row["output_messages"]) == [
        text_message("assistant", "Par", finish_reason="length")
    ]
    assert row["input_text"] == "Write an essay"
    assert row["output_text"] == "Par"
    assert row["finish_reasons"] == ["length"]


def test_attributes_beat_content_events(mapper: Mapper) -> None:
    attrs = factory.genai_attrs(prompt="from attributes")
    events = [event("gen_ai.content.prompt", {"gen_ai.input.messages": "from event"})]
    row = llm_of(mapper, attrs, events=events)
    assert row["input_text"] == "from attributes"


# --- spans that are not model calls ----------------------------------------------------------


def test_plain_span_goes_to_spans_with_events_and_links(mapper: Mapper) -> None:
    s = factory.span(
        {"http.request.method": "GET", "http.response.status_code": 200, "retry": False},
        trace_id=TRACE,
        span_id=SPAN,
        parent=PARENT,
        name="GET /orders",
        start_ns=START,
        error=True,
        events=[event("exception", {"exception.type": "KeyError"}, at=START + 5)],
    )
    s.links.append(
        Span.Link(
            trace_id=bytes.fromhex("11" * 16),
            span_id=bytes.fromhex("22" * 8),
            attributes=factory.kvs({"link.kind": "follows"}),
        )
    )
    s.status.message = "boom"
    calls, spans = mapper.map(factory.request([s]))
    assert calls == []
    (row,) = spans
    assert row["trace_id"] == TRACE.hex()
    assert row["span_id"] == SPAN.hex()
    assert row["parent_span_id"] == PARENT.hex()
    assert row["span_name"] == "GET /orders"
    assert row["kind"] == "client"
    assert row["scope_name"] == "tests"
    assert row["status_code"] == "error"
    assert row["status_message"] == "boom"
    assert row["attributes"] == {
        "http.request.method": "GET",
        "http.response.status_code": "200",
        "retry": "false",
    }
    (stored_event,) = json.loads(row["events"])
    # a nanosecond time may come as a JSON number or, like OTLP/JSON, as a string
    assert int(stored_event.pop("time_unix_nano")) == START + 5
    assert stored_event == {"name": "exception", "attributes": {"exception.type": "KeyError"}}
    assert json.loads(row["links"]) == [
        {"trace_id": "11" * 16, "span_id": "22" * 8, "attributes": {"link.kind": "follows"}}
    ]


def test_plain_span_without_events_or_links_stores_empty_strings(mapper: Mapper) -> None:
    row = plain_of(mapper, {"db.system": "postgresql"})
    assert row["events"] == ""
    assert row["links"] == ""
    assert row["parent_span_id"] == ""


def test_which_spans_are_model_calls(mapper: Mapper) -> None:
    calls = {
        "operation": {"gen_ai.operation.name": "chat"},
        "provider": {"gen_ai.provider.name": "openai"},
        "system": {"gen_ai.system": "openai"},
        "request model": {"gen_ai.request.model": "gpt-4o"},
        "response model": {"gen_ai.response.model": "gpt-4o"},
        "openinference model": {"llm.model_name": "gpt-4o"},
        "request type": {"llm.request.type": "chat"},
        "openinference llm": {"openinference.span.kind": "LLM"},
        "openinference embedding": {"openinference.span.kind": "EMBEDDING"},
    }
    others = {
        "chain": {"openinference.span.kind": "CHAIN"},
        "retriever": {"openinference.span.kind": "RETRIEVER"},
        "http": {"http.request.method": "POST", "url.full": "https://api.openai.com"},
        "bare": {},
    }
    spans = [
        factory.span(attrs, name=name, start_ns=START)
        for name, attrs in {**calls, **others}.items()
    ]
    llm_rows, span_rows = mapper.map(factory.request(spans))
    assert sorted(r["span_name"] for r in llm_rows) == sorted(calls)
    assert sorted(r["span_name"] for r in span_rows) == sorted(others)


def test_attribute_values_of_every_kind_as_text(mapper: Mapper) -> None:
    s = factory.span(
        {"s": "x", "b": True, "i": -3, "d": 1.5, "a": [1, "two", 3.5, False]}, start_ns=START
    )
    s.attributes.append(KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\xff")))
    s.attributes.append(KeyValue(key="map", value=kvlist(k="v", n=1)))
    s.attributes.append(KeyValue(key="empty", value=AnyValue()))
    (row,) = mapper.map(factory.request([s]))[1]
    attrs = row["attributes"]
    assert attrs.pop("empty") in ("", "null")  # a value with nothing set
    assert {k: v for k, v in attrs.items() if k not in ("a", "map")} == {
        "s": "x",
        "b": "true",
        "i": "-3",
        "d": "1.5",
        "bytes": "AP8=",
    }
    assert json.loads(attrs["a"]) == [1, "two", 3.5, False]
    assert json.loads(attrs["map"]) == {"k": "v", "n": 1}


def test_resource_attributes_give_service_version_and_environment(mapper: Mapper) -> None:
    resource = {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "deployment.environment.name": "prod",
        "deployment.environment": "legacy",
        "host.cpus": 8,
    }
    request = factory.request([factory.span(factory.genai_attrs(), start_ns=START)])
    (row,), _ = mapper.map(with_resource(request, resource))
    assert row["service"] == "checkout"
    assert row["service_version"] == "1.4.2"
    assert row["environment"] == "prod"
    assert row["resource_attributes"] == {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "deployment.environment.name": "prod",
        "deployment.environment": "legacy",
        "host.cpus": "8",
    }


def test_resource_without_service_name_and_the_deprecated_environment(mapper: Mapper) -> None:
    request = factory.request([factory.span({"a": 1}, start_ns=START)])
    _, (row,) = mapper.map(with_resource(request, {"deployment.environment": "staging"}))
    assert row["service"] == "unknown_service"
    assert row["service_version"] == ""
    assert row["environment"] == "staging"


def test_end_before_start_gives_zero_duration(mapper: Mapper) -> None:
    row = plain_of(mapper, {"a": 1}, duration_ns=-1_000)
    assert row["end_time"] == row["start_time"] == START
    assert row["duration_ms"] == 0.0


def test_timestamps_beyond_the_int64_range_do_not_wrap_to_before_1970(mapper: Mapper) -> None:
    row = plain_of(mapper, {"a": 1}, start_ns=2**64 - 10, duration_ns=5)
    assert row["start_time"] >= START
    assert row["end_time"] >= row["start_time"]


# --- batches of records ----------------------------------------------------------------------


def test_a_batch_maps_both_tables_per_project_and_drops_repeats(mapper: Mapper) -> None:
    call = factory.span(factory.genai_attrs(), trace_id=TRACE, span_id=SPAN, start_ns=START)
    http = factory.span({"http.route": "/"}, trace_id=TRACE, start_ns=START)
    wire = factory.request([call, http]).SerializeToString()
    # an export retried three times, then the same ids from two other projects
    projects = ["alpha", "alpha", "alpha", "alpha", "beta", "gamma"]
    batch = mapper.decoder.decode([envelope.pack(p, wire) for p in projects])
    assert batch.duplicates == 6  # three retries of two spans, each kept once
    calls, spans = rows_of(batch.llm_calls), rows_of(batch.spans)
    assert sorted((r["project_id"], r["span_id"]) for r in calls) == [
        ("alpha", SPAN.hex()),
        ("beta", SPAN.hex()),
        ("gamma", SPAN.hex()),
    ]
    assert sorted((r["project_id"], r["span_id"]) for r in spans) == [
        (p, http.span_id.hex()) for p in ("alpha", "beta", "gamma")
    ]
    assert {r["input_text"] for r in calls} == {"How do I reset my password?"}


def test_a_batch_of_calls_alone_maps_with_no_spans(mapper: Mapper) -> None:
    calls = [factory.span(factory.genai_attrs(), start_ns=START) for _ in range(3)]
    batch = mapper.decoder.decode(
        [envelope.pack("alpha", factory.request(calls).SerializeToString())]
    )
    assert (batch.llm_calls.num_rows, batch.spans.num_rows, batch.duplicates) == (3, 0, 0)


def test_ids_sent_once_as_a_call_and_once_as_a_plain_span_are_stored_once_as_the_call(
    mapper: Mapper,
) -> None:
    call = factory.span(factory.genai_attrs(), trace_id=TRACE, span_id=SPAN, start_ns=START)
    plain = factory.span({"http.route": "/"}, trace_id=TRACE, span_id=SPAN, start_ns=START)
    records = [
        envelope.pack("alpha", factory.request([s]).SerializeToString()) for s in (plain, call)
    ]
    batch = mapper.decoder.decode(records)
    assert (batch.llm_calls.num_rows, batch.spans.num_rows, batch.duplicates) == (1, 0, 1)


def test_a_cost_attribute_that_is_not_a_price_is_ignored(mapper: Mapper) -> None:
    """NaN, infinite or negative costs would poison the cost counters: the list price is used."""
    costs = []
    for bad in ("nan", "inf", "-1"):
        attrs = factory.genai_attrs(model="gpt-4o", **{"gen_ai.usage.cost": bad})
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = 100, 50
        calls, _ = mapper.map(factory.request([factory.span(attrs, start_ns=START)]))
        costs.append(calls[0]["cost_usd"])
    assert costs == [0.00075] * 3
