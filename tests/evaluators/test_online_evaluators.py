"""Online evaluators grade new production calls: a local judge speaking the chat-completions
wire format (scripted scores, 429s, 5xx, slow and malformed replies) and the built-in checks,
on the real store, as `driftline serve` runs them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from driftline.api.app import build_runtime, create_app
from driftline.evaluators.config import EvaluationSettings, EvaluatorSettings
from driftline.evaluators.metrics import EvaluatorMetrics
from driftline.evaluators.runner import Evaluator, PassOutcome
from driftline.review.config import ReviewSettings
from driftline.store import Store, keys, open_store
from tests.conftest import Collector, make_settings, start_server, stop_server
from tests.evaluators.judge_server import JudgeServer, Reply, completion, scores
from tests.factory import PROTOBUF, auth, genai_attrs, request, span

NOW = EvaluationSettings(settle_seconds=0, agreement_interval_seconds=0)


@pytest.fixture
def judge() -> Iterator[JudgeServer]:
    server = JudgeServer(lambda prompt, n: scores(accuracy=4, helpfulness=5))
    yield server
    server.close()


def make(name: str, registry: CollectorRegistry | None = None, **config: Any) -> Evaluator:
    settings = EvaluatorSettings.model_validate({"sample_rate": 1.0, **config})
    return Evaluator(name, settings, ReviewSettings(), EvaluatorMetrics(registry))


def llm_judge(url: str, **config: Any) -> dict[str, Any]:
    return {"kind": "llm_judge", "judge": {"url": url, "model": "grader"},
            "criteria": ["accuracy", "helpfulness"], **config}  # fmt: skip


def send(collector: Collector, answers: list[str], **attrs: Any) -> None:
    spans = [span(genai_attrs(prompt=f"question {i}", answer=a, **attrs)) for i, a in
             enumerate(answers)]  # fmt: skip
    response = collector.client.post(
        "/v1/traces", content=request(spans).SerializeToString(),
        headers={**PROTOBUF, **auth(collector.ingest_key)},
    )  # fmt: skip
    assert response.status_code == 200
    collector.wait_stored("llm_calls", len(answers))
    collector.drain()


def run(evaluator: Evaluator, store: Store) -> PassOutcome:
    return evaluator.run_once(store, NOW, time.time_ns())


def judged(store: Store, user: str | None = None) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT trace_id, span_id, name, value_number, user_id FROM feedback FINAL "
        "WHERE source = 'judge' ORDER BY trace_id, span_id, name"
    )
    return [r for r in rows if user is None or r["user_id"] == user]


def test_new_calls_are_graded_once_per_evaluator_version(
    collector: Collector, judge: JudgeServer
) -> None:
    store = collector.runtime.store
    send(collector, ["before the evaluator existed"])
    first = make("quality", **llm_judge(judge.url))
    assert run(first, store).read == 0  # a new evaluator starts from now: history is a backfill
    send(collector, ["answer one", "answer two", "answer three"])
    outcome = run(first, store)
    assert (outcome.read, outcome.graded) == (3, 3)
    rows = judged(store)
    assert len(rows) == 6 and {r["user_id"] for r in rows} == {"quality@1"}
    assert {(r["name"], r["value_number"]) for r in rows} == {("accuracy", 4), ("helpfulness", 5)}
    assert all("answer" in p for p in judge.prompts[:3])
    # the same version read again from the start stores nothing twice
    store.command("TRUNCATE TABLE evaluator_progress")
    run(first, store)
    send(collector, ["answer four"])
    assert run(first, store).graded == 1
    assert len(judged(store)) == 8
    # a new version grades the new calls again, beside the old version's scores
    second = make("quality", **llm_judge(judge.url), version="2")
    run(second, store)
    send(collector, ["answer five"])
    run(first, store)
    run(second, store)
    assert len(judged(store, "quality@2")) == 2 and len(judged(store, "quality@1")) == 10


def test_retries_honour_retry_after_and_failures_are_counted_never_stored(
    collector: Collector,
) -> None:
    store = collector.runtime.store

    def script(prompt: str, n: int) -> Reply:
        if "busy" in prompt and n == 0:
            return 429, {"Retry-After": "1"}, b"slow down", 0.0
        if "broken" in prompt:
            return 503, {}, b"down", 0.0
        if "garbled" in prompt:
            return completion("I would say it is pretty good!")
        if "out of range" in prompt:
            return scores(accuracy=9, helpfulness=2)
        return scores(accuracy=3, helpfulness=3)

    server = JudgeServer(script)
    registry = CollectorRegistry()
    evaluator = make("quality", registry, **llm_judge(server.url), max_retries=2, concurrency=1)
    try:
        run(evaluator, store)
        send(collector, ["busy at first"])
        started = time.monotonic()
        assert run(evaluator, store).graded == 1
        assert time.monotonic() - started >= 1.0, "Retry-After was not waited for"
        send(collector, ["broken judge", "garbled reply", "out of range"])
        outcome = run(evaluator, store)
    finally:
        server.close()
    assert outcome.graded == 0 and outcome.failed == {"unavailable": 1, "malformed": 2}
    assert len([p for p in server.prompts if "broken" in p]) == 3  # the try and two retries
    assert len(judged(store)) == 2  # only "busy at first"'s two criteria
    text = generate_latest(registry).decode()
    labels = 'evaluator="quality",reason="malformed",version="1"'
    assert f"driftline_evaluator_failed_calls_total{{{labels}}} 2.0" in text


def test_daily_budget_and_cost_cap_hold_across_passes(
    collector: Collector, judge: JudgeServer
) -> None:
    store = collector.runtime.store
    budgeted = make("budgeted", **llm_judge(judge.url), daily_budget=3)
    # 100 prompt tokens at $100/M and 10 answer tokens at $1,000/M: $0.02 a call
    priced = {"input_price_per_mtok": 100.0, "output_price_per_mtok": 1000.0}
    registry = CollectorRegistry()
    capped = make("capped", registry, **llm_judge(judge.url), **priced, daily_cost_cap_usd=0.05,
                  concurrency=1)  # fmt: skip
    run(budgeted, store)
    run(capped, store)
    send(collector, [f"answer {i}" for i in range(5)])
    first = run(budgeted, store)
    assert (first.graded, first.skipped) == (3, {"daily_budget": 2})
    send(collector, [f"later {i}" for i in range(2)])
    assert run(budgeted, store).skipped == {"daily_budget": 2}  # the day's budget was spent
    spent = run(capped, store)
    assert spent.graded == 3 and spent.skipped == {"cost_cap": 4}
    assert spent.cost_usd == pytest.approx(0.06)
    text = generate_latest(registry).decode()
    assert 'driftline_evaluator_spend_usd_total{evaluator="capped",version="1"} 0.06' in text
    assert 'driftline_evaluator_spend_today_usd{evaluator="capped",version="1"} 0.06' in text


def test_requests_in_flight_are_bounded_by_concurrency(collector: Collector) -> None:
    store = collector.runtime.store
    server = JudgeServer(lambda prompt, n: (*scores(accuracy=5, helpfulness=5)[:3], 0.2))
    evaluator = make("slow", **llm_judge(server.url), concurrency=3)
    try:
        run(evaluator, store)
        send(collector, [f"answer {i}" for i in range(9)])
        assert run(evaluator, store).graded == 9
    finally:
        server.close()
    assert server.most_in_flight == 3


def test_sampling_is_deterministic_and_near_the_rate(collector: Collector) -> None:
    store = collector.runtime.store
    evaluator = make("refusals", kind="refusal", sample_rate=0.3)
    run(evaluator, store)
    send(collector, [f"answer {i}" for i in range(200)])
    outcome = run(evaluator, store)
    assert 30 <= outcome.graded <= 90 and outcome.skipped == {"not_sampled": 200 - outcome.graded}


def test_built_in_checks(collector: Collector) -> None:
    store = collector.runtime.store
    checks = [make(kind, kind=kind) for kind in ("refusal", "empty", "json")]
    for check in checks:
        run(check, store)
    send(collector, ["I'm sorry, but I can't help with that.", "Sure: use apt-get."])
    send(collector, ['{"package": "vim"}', "{not json"], **{"gen_ai.output.type": "json"})
    send(collector, ["cut off in the mid"], **{"gen_ai.response.finish_reasons": ["length"]})
    for check in checks:
        assert run(check, store).graded == 5
    flagged = {(r["name"], r["trace_id"]) for r in judged(store) if r["value_number"] == 1}
    assert {name for name, _ in flagged} == {"refusal", "json", "empty"}
    assert len(flagged) == 3


def test_serve_runs_the_configured_evaluators(tmp_path, store: Store, judge: JudgeServer) -> None:
    settings = make_settings(
        tmp_path,
        evaluation={"interval_seconds": 0.2, "settle_seconds": 0},
        evaluators={"quality": llm_judge(judge.url, sample_rate=1.0)},
    )
    rt = build_runtime(settings, store)
    assert rt.evaluators is not None
    _, ingest = keys.create_key(store, "alpha", "ingest")
    with TestClient(create_app(rt)) as client:
        time.sleep(0.5)  # the first pass places the evaluator at now
        body = request([span(genai_attrs(answer="graded live"))]).SerializeToString()
        assert client.post("/v1/traces", content=body,
                           headers={**PROTOBUF, **auth(ingest)}).status_code == 200  # fmt: skip
        deadline = time.monotonic() + 15
        while not judged(store) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "driftline_evaluator_graded_calls_total" in client.get("/metrics").text
    assert {r["name"] for r in judged(store)} == {"accuracy", "helpfulness"}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"kind": "llm_judge"}, "needs judge"),
        ({"kind": "refusal", "criteria": ["x"]}, "for llm_judge"),
        ({"kind": "llm_judge", "judge": {"url": "ftp://x", "model": "m"}}, "http://"),
        (
            {"kind": "llm_judge", "judge": {"url": "http://x", "model": "m"}, "prompt": "{prompt}"},
            "{response}",
        ),
        ({"kind": "magic"}, "kind"),
    ],
)
def test_bad_evaluator_config_is_named(tmp_path, config: dict[str, Any], named: str) -> None:
    from driftline.api.config import ConfigError

    with pytest.raises(ConfigError, match=named.replace("{", r"\{").replace("}", r"\}")):
        make_settings(tmp_path, evaluators={"quality": config})
    with pytest.raises(ConfigError, match="a name is"):
        make_settings(tmp_path, evaluators={"Bad Name": {"kind": "refusal"}})


def test_a_backfill_grades_a_past_period_once_and_leaves_the_live_position(
    collector: Collector, judge: JudgeServer
) -> None:
    store = collector.runtime.store
    since = time.time_ns()
    send(collector, ["old answer one", "old answer two"])
    evaluator = make("quality", **llm_judge(judge.url))
    run(evaluator, store)  # placed at now: the old calls are history
    seen: list[int] = []
    outcome = evaluator.backfill(store, since, time.time_ns(), batch=1, progress=seen.append)
    assert (outcome.read, outcome.graded, seen) == (2, 2, [1, 1])
    assert evaluator.arrived_count(store, since, time.time_ns()) == 2
    again = evaluator.backfill(store, since, time.time_ns(), batch=10)
    assert again.graded == 2 and len(judged(store)) == 4  # graded again, stored once
    send(collector, ["live answer"])
    assert run(evaluator, store).read == 1  # the live pass went on from where it was


def test_eval_run_grades_a_backfill_from_the_command_line(tmp_path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    answers = ["I cannot help with that.", "Use apt-get install vim."]
    body = request([span(genai_attrs(answer=a)) for a in answers]).SerializeToString()
    headers = {**PROTOBUF, **auth(server.ingest_key)}
    assert httpx.post(f"{server.url}/v1/traces", content=body, headers=headers).status_code == 200
    deadline = time.monotonic() + 20
    while "driftline_wal_backlog_bytes 0.0" not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop_server(server)
    config = tmp_path / "driftline.toml"
    config.write_text('[evaluators.refusals]\nkind = "refusal"\nsample_rate = 1.0\n')
    command = [sys.executable, "-m", "driftline.cli", "eval", "run", "--data", str(data),
               "--config", str(config), "--since", "2020-01-01"]  # fmt: skip
    unknown = subprocess.run([*command, "--evaluator", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no evaluator 'nope'; configured: refusals" in unknown.stderr
    done = subprocess.run([*command, "--evaluator", "refusals"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 calls read, 2 graded" in done.stdout
    with open_store(data) as store:
        rows = judged(store)
    assert sorted(r["value_number"] for r in rows) == [0, 1]
    # the worker: one pass of every evaluator (a new one starts from now: nothing to read yet)
    worker = [sys.executable, "-m", "driftline.cli", "eval", "worker", "--once", "--data",
              str(data), "--config", str(config)]  # fmt: skip
    done = subprocess.run(worker, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "refusals: 0 calls read, 0 graded" in done.stdout


def test_the_api_lists_the_project_evaluators_and_their_day(
    collector_factory, judge: JudgeServer
) -> None:
    evaluators = {
        "quality": llm_judge(judge.url, sample_rate=1.0),
        "refusals": {"kind": "refusal", "sample_rate": 1.0},
        "elsewhere": {"kind": "empty", "projects": ["beta"]},
    }
    collector = collector_factory(evaluators=evaluators, evaluation={"enabled": False})
    store = collector.runtime.store
    quality = make("quality", **llm_judge(judge.url))
    run(quality, store)
    send(collector, ["one", "two"])
    run(quality, store)
    response = collector.client.get("/api/evaluators", headers=auth(collector.read_key))
    assert response.status_code == 200
    items = {item["name"]: item for item in response.json()["items"]}
    assert set(items) == {"quality", "refusals"}  # not another project's
    assert items["quality"]["today"]["graded"] == 2 and items["quality"]["user"] == "quality@1"
    assert items["refusals"]["daily_cost_cap_usd"] is None and not items["quality"]["running"]
    assert collector.client.get("/api/evaluators").status_code == 401


def test_relevance_is_the_cosine_of_question_and_answer(collector: Collector) -> None:
    store = collector.runtime.store
    relevance = make("relevance", kind="relevance")
    run(relevance, store)
    spans = [
        span(genai_attrs(prompt="How do I install the vim text editor on Debian?",
                         answer="Run apt-get install vim to install the vim text editor.")),
        span(genai_attrs(prompt="How do I install the vim text editor on Debian?",
                         answer="The 1998 World Cup final was played in Paris.")),
    ]  # fmt: skip
    response = collector.client.post(
        "/v1/traces", content=request(spans).SerializeToString(),
        headers={**PROTOBUF, **auth(collector.ingest_key)},
    )  # fmt: skip
    assert response.status_code == 200
    collector.wait_stored("llm_calls", 2)
    assert run(relevance, store).graded == 2
    by_span = {r["span_id"]: r["value_number"] for r in judged(store) if r["name"] == "relevance"}
    on_topic, off_topic = (by_span[s.span_id.hex()] for s in spans)
    assert -1 <= off_topic < on_topic <= 1 and on_topic - off_topic > 0.2


def test_a_prompt_template_may_show_json_and_a_question_may_hold_braces(
    collector: Collector, judge: JudgeServer
) -> None:
    store = collector.runtime.store
    template = 'Rate {criteria} as {"accuracy": 1-5}.\nQ: {prompt}\nA: {response}'
    evaluator = make("quality", **llm_judge(judge.url), prompt=template)
    run(evaluator, store)
    spans = [span(genai_attrs(prompt="What does {response} mean in a template?", answer="x"))]
    collector.client.post(
        "/v1/traces", content=request(spans).SerializeToString(),
        headers={**PROTOBUF, **auth(collector.ingest_key)},
    )  # fmt: skip
    collector.wait_stored("llm_calls", 1)
    assert run(evaluator, store).graded == 1
    assert judge.prompts[-1] == (
        'Rate accuracy, helpfulness as {"accuracy": 1-5}.\n'
        "Q: What does {response} mean in a template?\nA: x"
    )
