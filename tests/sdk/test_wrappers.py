"""wrap(client) with the real openai and anthropic packages against a local server in their
wire format; the spans go through a real collector and are read back from ClickHouse."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import anthropic
import openai
import pytest

from driftline import sdk
from driftline.sdk import observe
from tests.sdk.conftest import LiveCollector, init_for
from tests.sdk.llm_server import FakeLLMServer, Reply

QUESTION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is drift?"},
]


def openai_client(llm: FakeLLMServer) -> openai.OpenAI:
    return sdk.wrap(openai.OpenAI(base_url=llm.base_url + "/v1", api_key="k", max_retries=0))


def async_openai(llm: FakeLLMServer) -> openai.AsyncOpenAI:
    return sdk.wrap(openai.AsyncOpenAI(base_url=llm.base_url + "/v1", api_key="k", max_retries=0))


def anthropic_client(llm: FakeLLMServer) -> anthropic.Anthropic:
    return sdk.wrap(anthropic.Anthropic(base_url=llm.base_url, api_key="k", max_retries=0))


def async_anthropic(llm: FakeLLMServer) -> anthropic.AsyncAnthropic:
    return sdk.wrap(anthropic.AsyncAnthropic(base_url=llm.base_url, api_key="k", max_retries=0))


def traced(fn: Any) -> tuple[Any, str]:
    """Run `fn` inside a root span; return its result and the trace id."""
    seen: dict[str, Any] = {}

    @observe(name="root")
    def root() -> Any:
        seen["trace"] = sdk.current_trace_id()
        return fn()

    return root(), seen["trace"]


def one_call(live: LiveCollector, trace_id: str) -> dict[str, Any]:
    (call,) = live.rows("llm_calls", trace_id)
    call["input_messages"] = json.loads(call["input_messages"] or "[]")
    call["output_messages"] = json.loads(call["output_messages"] or "[]")
    return call


def test_chat_completion(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live)
    llm.push(Reply(text="Drift is change.", model="gpt-4o-mini-2024-07-18", input_tokens=21))
    client = openai_client(llm)
    result, trace_id = traced(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, temperature=0.2
        )
    )
    assert isinstance(result, openai.types.chat.ChatCompletion)
    assert result.choices[0].message.content == "Drift is change."
    call = one_call(live, trace_id)
    assert call["provider"] == "openai"
    assert call["operation"] == "chat"
    assert call["span_name"] == "chat gpt-4o-mini"
    assert call["request_model"] == "gpt-4o-mini"
    assert call["response_model"] == "gpt-4o-mini-2024-07-18"
    assert (call["input_tokens"], call["output_tokens"]) == (21, 5)
    assert call["finish_reasons"] == ["stop"]
    assert call["input_text"] == "What is drift?"
    assert call["output_text"] == "Drift is change."
    assert call["input_messages"][0] == {
        "role": "system",
        "parts": [{"type": "text", "content": "You answer briefly."}],
    }
    assert call["attributes"]["gen_ai.request.temperature"] == "0.2"
    assert call["attributes"]["server.address"] == "127.0.0.1"


def test_chat_stream_records_ttft_usage_and_text(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live)
    llm.push(Reply(text="one two three", first_chunk_delay=0.2, finish_reason="length"))
    client = openai_client(llm)

    def run() -> str:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    text, trace_id = traced(run)
    assert text == "one two three"
    call = one_call(live, trace_id)
    assert call["output_text"] == "one two three"
    assert call["finish_reasons"] == ["length"]
    assert (call["input_tokens"], call["output_tokens"]) == (12, 5)
    assert call["attributes"]["gen_ai.request.stream"] == "true"
    assert float(call["attributes"]["driftline.response.time_to_first_token"]) >= 0.2


def test_stream_the_app_stops_reading_still_ends_its_span(
    live: LiveCollector, llm: FakeLLMServer
) -> None:
    init_for(live)
    llm.push(Reply(text=" ".join(f"w{i}" for i in range(200))))
    client = openai_client(llm)

    def read_two() -> None:
        stream = client.chat.completions.create(model="m", messages=QUESTION, stream=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break  # no close(): the app just walks away

    _, trace_id = traced(read_two)
    gc.collect()
    call = one_call(live, trace_id)
    assert call["attributes"]["driftline.stream.closed_early"] == "true"
    assert call["output_text"].startswith("w0 w1")


def test_responses_plain_and_streamed(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live)
    llm.push(Reply(text="plain answer"), Reply(text="streamed answer", finish_reason="incomplete"))
    client = openai_client(llm)

    def both() -> list[str]:
        plain = client.responses.create(model="gpt-5", input="Hi", instructions="Be kind.")
        stream = client.responses.create(model="gpt-5", input="Hi again", stream=True)
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        return [plain.output_text, "".join(deltas)]

    texts, trace_id = traced(both)
    assert texts == ["plain answer", "streamed answer"]
    calls = live.rows("llm_calls", trace_id, count=2)
    by_output = {c["output_text"]: c for c in calls}
    plain, streamed = by_output["plain answer"], by_output["streamed answer"]
    assert plain["finish_reasons"] == ["stop"]
    assert plain["input_text"] == "Hi"
    assert json.loads(plain["input_messages"])[0]["role"] == "system"
    assert streamed["finish_reasons"] == ["length"]
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (12, 5)
    assert "driftline.response.time_to_first_token" in streamed["attributes"]


def test_openai_error_is_raised_unchanged_and_recorded(
    live: LiveCollector, llm: FakeLLMServer
) -> None:
    init_for(live)
    llm.push(Reply(status=429))
    client = openai_client(llm)
    seen: dict[str, Any] = {}

    def fail() -> None:
        seen["trace"] = sdk.current_trace_id()
        client.chat.completions.create(model="m", messages=QUESTION)

    with pytest.raises(openai.RateLimitError) as caught:
        traced(fail)
    assert caught.value.status_code == 429
    call = one_call(live, seen["trace"])
    assert call["error_type"] == "openai.RateLimitError"
    assert call["status_code"] == "error"


def test_async_openai_plain_and_stream(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live)
    llm.push(Reply(text="async plain"), Reply(text="async stream"))
    client = async_openai(llm)
    seen: dict[str, Any] = {}

    @observe(name="async-root")
    async def run() -> list[str]:
        seen["trace"] = sdk.current_trace_id()
        plain = await client.chat.completions.create(model="m", messages=QUESTION)
        stream = await client.chat.completions.create(model="m", messages=QUESTION, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return [plain.choices[0].message.content or "", "".join(parts)]

    assert asyncio.run(run()) == ["async plain", "async stream"]
    calls = live.rows("llm_calls", seen["trace"], count=2)
    assert sorted(c["output_text"] for c in calls) == ["async plain", "async stream"]


def test_anthropic_messages_plain_stream_and_helper(
    live: LiveCollector, llm: FakeLLMServer
) -> None:
    init_for(live)
    llm.push(
        Reply(text="plain", model="claude-test-1", input_tokens=30),
        Reply(text="raw stream", model="claude-test-1", finish_reason="max_tokens"),
        Reply(text="helper stream", model="claude-test-1"),
    )
    client = anthropic_client(llm)
    ask = {"role": "user", "content": [{"type": "text", "text": "Hello?"}]}

    def run() -> list[str]:
        plain = client.messages.create(
            model="claude-test-1", max_tokens=100, system="Be brief.", messages=[ask]
        )
        raw = client.messages.create(
            model="claude-test-1", max_tokens=100, messages=[ask], stream=True
        )
        raw_text = "".join(
            e.delta.text
            for e in raw
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        with client.messages.stream(model="claude-test-1", max_tokens=100, messages=[ask]) as s:
            helper_text = "".join(s.text_stream)
        return [plain.content[0].text, raw_text, helper_text]

    texts, trace_id = traced(run)
    assert texts == ["plain", "raw stream", "helper stream"]
    calls = {c["output_text"]: c for c in live.rows("llm_calls", trace_id, count=3)}
    assert len(calls) == 3  # the client's own spans are turned off: no second copy
    plain = calls["plain"]
    assert plain["provider"] == "anthropic"
    assert plain["input_tokens"] == 30
    assert plain["finish_reasons"] == ["end_turn"]
    assert json.loads(plain["input_messages"])[0] == {
        "role": "system",
        "parts": [{"type": "text", "content": "Be brief."}],
    }
    assert calls["raw stream"]["finish_reasons"] == ["max_tokens"]
    assert calls["raw stream"]["output_tokens"] == 5
    helper = calls["helper stream"]
    assert helper["input_text"] == "Hello?"
    assert "driftline.response.time_to_first_token" in helper["attributes"]


def test_async_anthropic(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live)
    llm.push(Reply(text="async claude", model="claude-test-1"), Reply(text="async helper"))
    client = async_anthropic(llm)
    seen: dict[str, Any] = {}
    ask = {"role": "user", "content": "Hi"}

    @observe(name="async-root")
    async def run() -> list[str]:
        seen["trace"] = sdk.current_trace_id()
        plain = await client.messages.create(model="claude-test-1", max_tokens=10, messages=[ask])
        async with client.messages.stream(
            model="claude-test-1", max_tokens=10, messages=[ask]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        return [plain.content[0].text, text]

    assert asyncio.run(run()) == ["async claude", "async helper"]
    calls = live.rows("llm_calls", seen["trace"], count=2)
    assert sorted(c["output_text"] for c in calls) == ["async claude", "async helper"]


def test_content_off_and_masking(live: LiveCollector, llm: FakeLLMServer) -> None:
    init_for(live, mask=sdk.default_mask)
    llm.push(Reply(text="Mail me at ann@example.com or call +1 415 555 0100"))
    client = openai_client(llm)
    secret = [{"role": "user", "content": "my key is sk-proj-abcdefghijklmnopqrstuvwx123"}]
    _, trace_id = traced(lambda: client.chat.completions.create(model="m", messages=secret))
    call = one_call(live, trace_id)
    assert call["input_text"] == "my key is <api-key>"
    assert call["output_text"] == "Mail me at <email> or call <phone>"
    sdk.shutdown()

    init_for(live, capture_content=False)
    client = openai_client(llm)
    _, trace_id = traced(lambda: client.chat.completions.create(model="m", messages=secret))
    call = one_call(live, trace_id)
    assert call["input_messages"] == [] and call["output_messages"] == []
    assert call["output_tokens"] == 5  # metadata is still recorded


def test_wrap_is_idempotent_and_refuses_unknown_clients(llm: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=llm.base_url + "/v1", api_key="k")
    assert sdk.wrap(sdk.wrap(client)) is client
    with pytest.raises(TypeError, match="supports OpenAI and Anthropic clients"):
        sdk.wrap(object())


def test_wrapped_client_before_init_is_untouched(llm: FakeLLMServer) -> None:
    client = openai_client(llm)
    result = client.chat.completions.create(model="m", messages=QUESTION)
    assert result.choices[0].message.content == "Hello there!"
