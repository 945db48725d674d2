"""Live A/B: traffic split by the app (sdk.choose_version's attributes on its spans) is compared
version against version through GET /api/experiments, on calls stored by the collector."""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

from driftline.alerts.conditions import evaluate
from driftline.alerts.rules import Rule
from driftline.detectors.tables import record_flags
from driftline.review.feedback import FeedbackIn, store_feedback
from tests.conftest import Collector
from tests.evaluators.test_online_evaluators import llm_judge
from tests.factory import PROTOBUF, auth, genai_attrs, request, span


def serve(collector: Collector, version: str, calls: int, error_rate: float, seed: int) -> list:
    """`calls` traces: an app span holding the version chosen, and its LLM call."""
    rng = random.Random(seed)
    spans, keys = [], []
    for i in range(calls):
        trace_id, app_id = os.urandom(16), os.urandom(8)
        choice = {
            "driftline.experiment.name": "ft-rollout",
            "driftline.experiment.version": version,
        }
        spans.append(span(choice, trace_id=trace_id, span_id=app_id, name="answer"))
        call_id = os.urandom(8)
        spans.append(span(genai_attrs(prompt=f"q{i}"), trace_id=trace_id, span_id=call_id,
                          parent=app_id, error=rng.random() < error_rate,
                          duration_ns=rng.randint(300, 500) * 10**6))  # fmt: skip
        keys.append((trace_id.hex(), call_id.hex()))
    response = collector.client.post(
        "/v1/traces", content=request(spans).SerializeToString(),
        headers={**PROTOBUF, **auth(collector.ingest_key)},
    )  # fmt: skip
    assert response.status_code == 200
    return keys


def judge(
    collector: Collector, keys: list, user: str, source: str, scores: list[int],
    name: str = "accuracy",
) -> None:  # fmt: skip
    records = [
        FeedbackIn.model_validate({"trace_id": t, "span_id": s, "name": name, "value": v,
                                   "user": user})
        for (t, s), v in zip(keys, scores, strict=True)
    ]  # fmt: skip
    store_feedback(collector.runtime.store, "alpha", records, source)  # type: ignore[arg-type]


def experiments(collector: Collector) -> dict[str, Any]:
    answer = collector.client.get("/api/experiments", headers=auth(collector.read_key))
    assert answer.status_code == 200
    return answer.json()


def test_a_candidate_with_more_errors_loses_and_trusted_judges_count(collector_factory) -> None:
    evaluators = {"quality": llm_judge("http://judge.invalid", criteria=["accuracy"],
                                       min_audited=3)}  # fmt: skip
    collector = collector_factory(evaluators=evaluators, evaluation={"enabled": False})
    baseline = serve(collector, "ft-v1", 400, 0.0, seed=1)
    candidate = serve(collector, "ft-v2", 200, 0.3, seed=2)
    collector.wait_stored("llm_calls", 600)
    collector.drain()

    (found,) = experiments(collector)["items"]
    assert found["experiment"] == "ft-rollout" and found["baseline"] == "ft-v1"
    (versus,) = found["candidates"]
    assert versus["version"] == "ft-v2" and versus["calls"] == 200
    assert versus["verdict"] == "loses"
    metrics = {m["metric"]: m for m in versus["metrics"]}
    assert set(metrics) == {"error_rate", "latency_ms", "cost_usd"}  # no trusted judge yet
    assert metrics["error_rate"]["worse"] and 0.2 < metrics["error_rate"]["candidate_mean"] < 0.4
    assert not metrics["latency_ms"]["worse"]

    # a judge scores both versions; once people agree with it, its criterion is compared too
    judge(collector, baseline[:50], "quality@1", "judge", [4, 5] * 25)
    judge(collector, candidate[:50], "quality@1", "judge", [3, 4] * 25)
    untrusted = experiments(collector)["items"][0]["candidates"][0]["metrics"]
    assert "judge:accuracy" not in {m["metric"] for m in untrusted}
    judge(collector, baseline[:4], "ann", "review", [4, 5, 4, 5])
    answer = experiments(collector)
    assert answer["trusted_judges"] == ["quality@1"]
    metrics = {m["metric"]: m for m in answer["items"][0]["candidates"][0]["metrics"]}
    assert metrics["judge:accuracy"]["baseline_mean"] == 4.5
    assert metrics["judge:accuracy"]["candidate_mean"] == 3.5 and metrics["judge:accuracy"]["worse"]

    # an alert rule announces the verdict (through the alert routes, like any alert)
    store = collector.runtime.store
    (alert,) = evaluate(store, rule({"verdict": "loses", "min_audited": 3}), time.time())
    assert alert.labels == {"project": "alpha", "experiment": "ft-rollout", "version": "ft-v2",
                            "baseline": "ft-v1", "alertname": "VersionVerdict"}  # fmt: skip
    assert alert.value == 200
    judged = {m["metric"] for m in alert.evidence["metrics"]}
    assert "error_rate" in judged and "judge:accuracy" in judged
    assert evaluate(store, rule({"verdict": "wins"}), time.time()) == []
    assert evaluate(store, rule({"experiment": "another"}), time.time()) == []
    # and the review UI's overview shows the comparison
    page = collector.client.get("/review/overview", headers=auth(collector.read_key)).text
    row = re.search(r'data-experiment="ft-rollout" data-version="ft-v2">.*?class="verdict">(\w+)<'
                    r"/td>\s*<td>([^<]*)</td>", page, re.S)  # fmt: skip
    assert row and row.group(1) == "loses" and "error_rate" in row.group(2)


def rule(condition: dict[str, Any]) -> Rule:
    return Rule.model_validate({"alert": "VersionVerdict", "when": {"experiment": condition}})


def test_built_in_checks_and_the_apps_thumbs_are_compared_too(collector_factory) -> None:
    collector = collector_factory(
        evaluators={"refusals": {"kind": "refusal"}}, evaluation={"enabled": False}
    )
    baseline = serve(collector, "ft-v1", 200, 0.0, seed=4)
    candidate = serve(collector, "ft-v2", 200, 0.0, seed=5)
    collector.wait_stored("llm_calls", 400)
    collector.drain()
    judge(collector, baseline, "refusals@1", "judge", [0] * 200, name="refusal")
    judge(collector, candidate, "refusals@1", "judge", [1, 0] * 100, name="refusal")  # half
    thumbs = [
        FeedbackIn.model_validate({"trace_id": t, "span_id": s, "name": "thumbs", "value": up})
        for keys, rate in ((baseline, 2), (candidate, 2)) for i, (t, s) in enumerate(keys)
        for up in [i % rate == 0]
    ]  # fmt: skip
    store_feedback(collector.runtime.store, "alpha", thumbs, "sdk")
    (versus,) = experiments(collector)["items"][0]["candidates"]
    metrics = {m["metric"]: m for m in versus["metrics"]}
    refusal = metrics["check:refusal"]
    assert refusal["better"] == "lower" and refusal["worse"] and refusal["candidate_mean"] == 0.5
    assert metrics["app_sdk:thumbs"]["better"] == "higher"
    assert not metrics["app_sdk:thumbs"]["worse"]
    assert versus["verdict"] == "loses"


def test_versions_without_a_difference_are_not_called_worse(collector_factory) -> None:
    collector = collector_factory()
    serve(collector, "ft-v1", 300, 0.05, seed=3)
    serve(collector, "ft-v2", 300, 0.05, seed=3)
    collector.wait_stored("llm_calls", 600)
    collector.drain()
    (found,) = experiments(collector)["items"]
    (versus,) = found["candidates"]
    assert versus["verdict"] != "loses"
    assert not any(m["worse"] for m in versus["metrics"])
    assert collector.client.get("/api/experiments").status_code == 401


def choose(collector: Collector, pairs: list[tuple[Any, Any]], choices: list[str]) -> None:
    """Reviewers choose between two answers side by side (`a`, `b` or `tie`)."""
    records = [
        FeedbackIn.model_validate({"name": "preference", "choice": choice, "user": "ann",
                                   "trace_id": a[0],
                                   "a": {"trace_id": a[0], "span_id": a[1]},
                                   "b": {"trace_id": b[0], "span_id": b[1]}})
        for (a, b), choice in zip(pairs, choices, strict=True)
    ]  # fmt: skip
    store_feedback(collector.runtime.store, "alpha", records, "review")


def test_the_win_rate_where_people_chose_between_answers_and_flag_rates_decide(
    collector_factory,
) -> None:
    collector = collector_factory(evaluation={"enabled": False})
    baseline = serve(collector, "ft-v1", 400, 0.0, seed=6)
    candidate = serve(collector, "ft-v2", 400, 0.0, seed=7)
    collector.wait_stored("llm_calls", 800)
    collector.drain()
    (versus,) = experiments(collector)["items"][0]["candidates"]
    assert versus["pairwise"] == {"wins": 0, "losses": 0, "ties": 0}
    assert "pairwise:win_rate" not in {m["metric"] for m in versus["metrics"]}

    # the candidate's answer is chosen in 52 of 60 pairs (ties count half), shown either side
    pairs = [(candidate[i], baseline[i]) if i % 2 else (baseline[i], candidate[i])
             for i in range(60)]  # fmt: skip
    picks = [("b", "a")[i % 2] if i < 50 else "tie" if i < 54 else ("a", "b")[i % 2]
             for i in range(60)]  # fmt: skip
    choose(collector, [pairs[i] for i in range(60)], ["tie"] * 60)  # first thoughts...
    choose(collector, pairs, picks)  # ...and the same reviewer's latest choices, which count
    (versus,) = experiments(collector)["items"][0]["candidates"]
    assert versus["pairwise"] == {"wins": 50, "losses": 6, "ties": 4}
    rate = {m["metric"]: m for m in versus["metrics"]}["pairwise:win_rate"]
    assert rate["candidate_mean"] == (50 + 2) / 60 and rate["low"] > 0
    assert versus["verdict"] == "wins"

    # the detectors flag both versions alike (a guard only: it does not stop a win), and a
    # few of the candidate's calls for a reason never seen in the baseline's (no share of 0)
    store = collector.runtime.store
    now = time.time_ns()

    def flag(keys: list, every: int, reason: str) -> None:
        calls = [{"trace_id": t, "span_id": s, "start_ns": now, "reasons": [reason]}
                 for t, s in keys[::every]]  # fmt: skip
        record_flags(store, "alpha", calls, f"window-{reason}")

    flag(candidate, 100, "latency")
    flag(baseline, 100, "latency")
    flag(candidate, 200, "tokens")
    (versus,) = experiments(collector)["items"][0]["candidates"]
    metrics = {m["metric"]: m for m in versus["metrics"]}
    assert metrics["flags:latency"]["candidate_mean"] == metrics["flags:latency"]["baseline_mean"]
    assert (
        metrics["flags:tokens"]["baseline_mean"] == 0
        and metrics["flags:tokens"]["relative"] is None
    )
    assert versus["verdict"] == "wins"

    # then a fifth of the candidate's calls as novel, few of the baseline's: it loses
    flag(candidate, 5, "novel")
    flag(baseline, 100, "novel")
    (versus,) = experiments(collector)["items"][0]["candidates"]
    novel = {m["metric"]: m for m in versus["metrics"]}["flags:novel"]
    assert novel["baseline_mean"] == 4 / 400 and novel["candidate_mean"] == 80 / 400
    assert novel["better"] == "lower" and novel["worse"] and versus["verdict"] == "loses"


def test_a_candidate_people_prefer_less_often_than_the_bar_loses(collector_factory) -> None:
    collector = collector_factory(evaluation={"enabled": False}, experiments={"min_win_rate": 0.6})
    baseline = serve(collector, "ft-v1", 400, 0.0, seed=8)
    candidate = serve(collector, "ft-v2", 400, 0.0, seed=9)
    collector.wait_stored("llm_calls", 800)
    collector.drain()
    # an even split: the candidate is no better; with enough pairs it is shown short of 60%
    choose(collector, list(zip(candidate, baseline, strict=True)), ["a", "b"] * 200)
    (versus,) = experiments(collector)["items"][0]["candidates"]
    rate = {m["metric"]: m for m in versus["metrics"]}["pairwise:win_rate"]
    assert rate["candidate_mean"] == 0.5 and 0.5 + rate["high"] < 0.6
    assert versus["verdict"] == "loses"
