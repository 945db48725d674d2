"""@observe against a real collector: traces, arguments, results, errors, context."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from driftline import sdk
from driftline.sdk import observe
from tests.sdk.conftest import LiveCollector, init_for


class Boom(Exception):
    pass


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["span_name"]: row for row in rows}


def test_undecorated_behaviour_before_init() -> None:
    @observe
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert sdk.current_trace_id() is None


def test_nested_sync_calls_form_one_trace_with_inputs_and_outputs(live: LiveCollector) -> None:
    init_for(live, service_name="observe-sync")
    seen: dict[str, str | None] = {}

    @observe(name="retrieve", as_type="retrieval")
    def retrieve(question: str, k: int = 2) -> list[str]:
        return [f"doc-{i}" for i in range(k)]

    @observe
    def answer(question: str) -> str:
        seen["trace"] = sdk.current_trace_id()
        docs = retrieve(question, k=3)
        return f"{question} -> {len(docs)} docs"

    assert answer("what is drift?") == "what is drift? -> 3 docs"
    rows = _by_name(live.rows("spans", seen["trace"] or "", count=2))
    outer = rows["test_nested_sync_calls_form_one_trace_with_inputs_and_outputs.<locals>.answer"]
    inner = rows["retrieve"]
    assert inner["parent_span_id"] == outer["span_id"]
    assert outer["parent_span_id"] == ""
    assert outer["attributes"]["input.value"] == "what is drift?"
    assert outer["attributes"]["output.value"] == "what is drift? -> 3 docs"
    assert json.loads(inner["attributes"]["input.value"]) == {"question": "what is drift?", "k": 3}
    assert json.loads(inner["attributes"]["output.value"]) == ["doc-0", "doc-1", "doc-2"]
    assert inner["attributes"]["driftline.observation.type"] == "retrieval"
    assert outer["service"] == "observe-sync"


def test_exception_is_reraised_unchanged_and_recorded(live: LiveCollector) -> None:
    init_for(live)
    error = Boom("no answer")
    seen: dict[str, str | None] = {}

    @observe
    def fails() -> None:
        seen["trace"] = sdk.current_trace_id()
        raise error

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is error
    (row,) = live.rows("spans", seen["trace"] or "")
    assert row["status_code"] == "error"
    assert "no answer" in row["status_message"]
    assert row["attributes"]["error.type"] == "tests.Boom"
    assert "exception" in row["events"]


def test_async_generator_and_generator_spans(live: LiveCollector) -> None:
    init_for(live)
    seen: dict[str, str | None] = {}

    @observe(name="tokens")
    def tokens(n: int) -> Any:
        for i in range(n):
            yield f"t{i} "

    @observe(name="atokens")
    async def atokens(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"a{i} "

    @observe(name="main")
    async def main() -> str:
        seen["trace"] = sdk.current_trace_id()
        parts = [t async for t in atokens(2)]
        return "".join(parts) + "".join(tokens(3))

    assert asyncio.run(main()) == "a0 a1 t0 t1 t2 "
    rows = _by_name(live.rows("spans", seen["trace"] or "", count=3))
    assert rows["atokens"]["attributes"]["output.value"] == "a0 a1 "
    assert rows["tokens"]["attributes"]["output.value"] == "t0 t1 t2 "
    assert rows["tokens"]["parent_span_id"] == rows["main"]["span_id"]
    assert rows["atokens"]["parent_span_id"] == rows["main"]["span_id"]


def test_generator_span_is_not_current_while_the_caller_runs(live: LiveCollector) -> None:
    init_for(live)

    @observe(name="outer")
    def outer() -> list[str | None]:
        spans = []
        for _ in numbers():
            spans.append(sdk.current_span_id())
        return spans

    @observe(name="numbers")
    def numbers() -> Any:
        yield 1
        yield 2

    @observe(name="root")
    def root() -> tuple[str | None, list[str | None]]:
        return sdk.current_span_id(), outer()

    _, seen = root()
    assert len(set(seen)) == 1  # the caller's own span, not the generator's


def test_early_closed_generator_still_ends_its_span(live: LiveCollector) -> None:
    init_for(live)
    seen: dict[str, str | None] = {}

    @observe(name="endless")
    def endless() -> Any:
        seen["trace"] = sdk.current_trace_id()
        i = 0
        while True:
            yield i
            i += 1

    gen = endless()
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    (row,) = live.rows("spans", seen["trace"] or "")
    assert row["attributes"]["driftline.stream.closed_early"] == "true"


def test_context_flows_into_threads_pools_and_tasks(live: LiveCollector) -> None:
    init_for(live)
    seen: dict[str, Any] = {}

    @observe(name="leaf")
    def leaf(where: str) -> str:
        return where

    @observe(name="aleaf")
    async def aleaf() -> str:
        return "task"

    @observe(name="fan-out")
    def fan_out() -> None:
        seen["trace"] = sdk.current_trace_id()
        thread = threading.Thread(target=leaf, args=("thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(leaf, "pool").result()

        async def tasks() -> None:
            await asyncio.gather(asyncio.create_task(aleaf()), asyncio.create_task(aleaf()))

        asyncio.run(tasks())

    fan_out()
    rows = live.rows("spans", seen["trace"] or "", count=5)
    root = next(r for r in rows if r["span_name"] == "fan-out")
    children = [r for r in rows if r["span_name"] != "fan-out"]
    assert len(children) == 4
    assert all(r["parent_span_id"] == root["span_id"] for r in children)


def test_capture_flags_and_content_off(live: LiveCollector) -> None:
    init_for(live, capture_content=False)
    seen: dict[str, str | None] = {}

    @observe(name="secret")
    def secret(password: str) -> str:
        seen["trace"] = sdk.current_trace_id()
        return password[::-1]

    assert secret("hunter2") == "2retnuh"
    (row,) = live.rows("spans", seen["trace"] or "")
    assert "input.value" not in row["attributes"]
    assert "output.value" not in row["attributes"]
    sdk.shutdown()

    init_for(live)

    @observe(name="half", capture_output=False)
    def half(x: int) -> int:
        seen["trace"] = sdk.current_trace_id()
        return x * 2

    half(21)
    (row,) = live.rows("spans", seen["trace"] or "")
    assert row["attributes"]["input.value"] == "21"
    assert "output.value" not in row["attributes"]


def test_llm_type_becomes_a_call_and_agent_name_reaches_it(live: LiveCollector) -> None:
    init_for(live)
    seen: dict[str, str | None] = {}

    @observe(as_type="llm", name="local-model")
    def generate(prompt: str) -> str:
        return "a careful answer"

    @observe(as_type="agent", name="support-agent")
    def agent(question: str) -> str:
        seen["trace"] = sdk.current_trace_id()
        return generate(question)

    agent("how do I reset my password?")
    (call,) = live.rows("llm_calls", seen["trace"] or "")
    assert call["input_text"] == "how do I reset my password?"
    assert call["output_text"] == "a careful answer"
    (agent_span,) = live.rows("spans", seen["trace"] or "")
    assert agent_span["attributes"]["gen_ai.agent.name"] == "support-agent"
    assert agent_span["attributes"]["gen_ai.operation.name"] == "invoke_agent"


def test_long_and_odd_arguments_are_capped_and_never_raise(live: LiveCollector) -> None:
    init_for(live, max_attribute_chars=100)
    seen: dict[str, str | None] = {}

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    @observe(name="odd")
    def odd(a: object, b: str, c: dict[str, Any]) -> str:
        seen["trace"] = sdk.current_trace_id()
        return b

    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert odd(Hostile(), "x" * 10_000, cyclic) == "x" * 10_000
    (row,) = live.rows("spans", seen["trace"] or "")
    assert len(row["attributes"]["input.value"]) == 100
    assert row["attributes"]["output.value"].endswith("[truncated 9900 chars]")


def test_head_sampling_keeps_or_drops_whole_traces(live: LiveCollector) -> None:
    init_for(live, sample_rate=0.5)
    traces: list[str | None] = []

    @observe(name="child")
    def child() -> None:
        pass

    @observe(name="parent")
    def parent() -> None:
        traces.append(sdk.current_trace_id())
        child()
        child()

    for _ in range(200):
        parent()
    sdk.flush()
    assert sdk.stats()["spans_sent"] % 3 == 0
    kept = sdk.stats()["spans_sent"] // 3
    assert 60 <= kept <= 140  # 200 traces at rate 0.5: a 6-sigma band
    ids = [t for t in traces if t]
    rows = live.store.query(
        "SELECT trace_id, count() AS n FROM spans FINAL WHERE trace_id IN {ids:Array(String)} "
        "GROUP BY trace_id",
        {"ids": ids},
    )
    live.rows("spans", ids[0] or "", count=0)
    assert all(r["n"] == 3 for r in rows)


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="as_type must be one of"):
        observe(as_type="wizard")  # type: ignore[arg-type]
    with pytest.raises(sdk.ConfigError, match=r"sample_rate must be between 0\.0 and 1\.0"):
        sdk.init(sample_rate=2)
    with pytest.raises(sdk.ConfigError, match="endpoint must be an http"):
        sdk.init(endpoint="localhost:4318")
    with pytest.raises(sdk.ConfigError, match="unknown setting"):
        sdk.init(queue_size=5)


def test_methods_bind_and_self_is_not_recorded(live: LiveCollector) -> None:
    init_for(live)

    class Bot:
        greeting = "hi"

        @observe(name="greet")
        def greet(self, name: str) -> str:
            return f"{self.greeting} {name}"

        @observe(name="agreet")
        async def agreet(self, name: str, punct: str = "!") -> str:
            return f"{self.greeting} {name}{punct}"

    @observe(name="outer")
    def outer() -> tuple[str | None, list[str]]:
        bot = Bot()
        return sdk.current_trace_id(), [bot.greet("ann"), asyncio.run(bot.agreet("bo", "?"))]

    trace_id, greetings = outer()
    assert greetings == ["hi ann", "hi bo?"]
    rows = _by_name(live.rows("spans", trace_id or "", count=3))
    assert rows["greet"]["attributes"]["input.value"] == "ann"
    assert json.loads(rows["agreet"]["attributes"]["input.value"]) == {"name": "bo", "punct": "?"}


def test_gzip_compression_reaches_the_collector(live: LiveCollector) -> None:
    init_for(live, compression="gzip")

    @observe(name="zipped")
    def zipped(text: str) -> str:
        return sdk.current_trace_id() or ""

    trace_id = zipped("x" * 5000)
    (row,) = live.rows("spans", trace_id)
    assert row["attributes"]["input.value"] == "x" * 5000
