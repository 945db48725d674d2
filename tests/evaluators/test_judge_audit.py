"""People audit the judges: a share of what a judge grades joins the review queue, and the
judge is trusted only while its scores agree with the reviewers'."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import spearmanr

from driftline.alerts.conditions import evaluate
from driftline.alerts.rules import Rule
from driftline.detectors.tables import queue_calls
from driftline.evaluators.runner import EvaluatorLoop
from driftline.review.feedback import JUDGE_AUDIT as AUDIT
from driftline.review.feedback import FeedbackIn, store_feedback
from driftline.store import keys
from tests.conftest import Collector
from tests.evaluators.judge_server import JudgeServer, Reply, scores
from tests.evaluators.test_online_evaluators import NOW, judged, llm_judge, make, send
from tests.factory import auth

CALLS = 40
JUDGE_RULE = Rule.model_validate(
    {"alert": "JudgeDisagrees",
     "when": {"judge": {"evaluator": "quality", "min_spearman": 0.8, "min_audited": 10}}}
)  # fmt: skip


def graded_by_answer(prompt: str, n: int) -> Reply:
    """The judge scores `answer i` with 1 + i % 5."""
    found = re.search(r"answer (\d+)", prompt)
    assert found
    return scores(accuracy=1 + int(found.group(1)) % 5)


def review(collector: Collector, people: dict[tuple[str, str], float], when: datetime) -> None:
    records = [
        FeedbackIn.model_validate({"trace_id": t, "span_id": s, "name": "accuracy",
                                   "value": int(v), "user": "ann", "created_at": when})
        for (t, s), v in people.items()
    ]  # fmt: skip
    store_feedback(collector.runtime.store, "alpha", records, "review")


def test_audited_calls_are_queued_and_trust_follows_agreement(collector_factory) -> None:
    config = llm_judge("", criteria=["accuracy"], sample_rate=1.0, audit_rate=0.5,
                       min_audited=10)  # fmt: skip
    server = JudgeServer(graded_by_answer)
    config["judge"]["url"] = server.url
    collector = collector_factory(evaluators={"quality": config}, evaluation={"enabled": False})
    store = collector.runtime.store
    registry = CollectorRegistry()
    evaluator = make("quality", registry, **config)
    loop = EvaluatorLoop(store, [evaluator], NOW)
    try:
        loop.run_once()
        send(collector, [f"answer {i}" for i in range(CALLS)])
        first = store.query("SELECT trace_id, span_id FROM llm_calls ORDER BY start_time LIMIT 1")[
            0
        ]
        call = {**first, "start_ns": 1, "service": "svc"}
        queue_calls(store, "alpha", [call], "novel", "window-1")  # flagged before the judge
        outcome = loop.run_once()["quality"]
    finally:
        server.close()
    assert outcome.graded == CALLS and 5 <= outcome.audited <= 35  # about half
    queued = store.query(
        "SELECT trace_id, span_id, reasons, source, window_key FROM review_queue FINAL "
        "WHERE project_id = 'alpha'"
    )
    audits = [q for q in queued if q["source"] == AUDIT]
    assert len(audits) == outcome.audited
    assert all(q["reasons"] == [AUDIT] and q["window_key"] == "judge:quality@1" for q in audits)
    kept = next(q for q in queued if q["trace_id"] == first["trace_id"])
    assert kept["reasons"] == ["novel"], "a call queued by a detector keeps its reasons"

    judge = {(r["trace_id"], r["span_id"]): r["value_number"] for r in judged(store)}
    audited = [(q["trace_id"], q["span_id"]) for q in audits]
    read = auth(collector.read_key)
    # blind: the trace page hides the judge's scores of a call waiting for its audit
    other = next(k for k in judge if k not in audited and k[0] != first["trace_id"])
    for (trace_id, _), shown in ((audited[0], False), (other, True)):
        page = collector.client.get(f"/review/traces/{trace_id}", headers=read)
        assert page.status_code == 200
        assert ("judge · quality@1" in page.text) is shown

    # the reviewers agree (all but one call in six scored alike): trusted
    close = {k: min(5, judge[k] + (i % 6 == 0)) for i, k in enumerate(audited)}
    assert spearmanr([judge[k] for k in audited], [close[k] for k in audited]).statistic >= 0.8
    review(collector, close, datetime.now(UTC))
    loop.run_once()
    agreement = collector.client.get("/api/evaluators/quality/agreement", headers=read).json()
    assert agreement["trusted"] is True
    (criterion,) = agreement["criteria"]
    assert criterion["audited"] == len(audited) and criterion["spearman"] >= 0.8
    assert criterion["alpha"] is not None
    assert _gauge(registry, "driftline_evaluator_trusted") == 1
    assert evaluate(store, JUDGE_RULE, time.time()) == []
    assert _agreement_row(collector) == (str(len(audited)), "yes")

    # they re-score, now reversing every other call's score: untrusted
    loose = {k: (judge[k] if i % 2 else 6 - judge[k]) for i, k in enumerate(audited)}
    rho = spearmanr([judge[k] for k in audited], [loose[k] for k in audited]).statistic
    assert rho < 0.8
    review(collector, loose, datetime.now(UTC) + timedelta(seconds=1))
    loop.run_once()
    agreement = collector.client.get("/api/evaluators/quality/agreement", headers=read).json()
    assert agreement["trusted"] is False
    assert abs(agreement["criteria"][0]["spearman"] - rho) < 1e-9
    assert _gauge(registry, "driftline_evaluator_trusted") == 0
    (alert,) = evaluate(store, JUDGE_RULE, time.time())
    assert alert.labels == {"project": "alpha", "evaluator": "quality", "version": "1",
                            "alertname": "JudgeDisagrees"}  # fmt: skip
    assert alert.value == pytest.approx(rho) and alert.evidence["window_key"] == "judge:quality@1"
    assert _agreement_row(collector) == (str(len(audited)), "no")


def test_too_few_audits_leave_trust_undecided_and_checks_are_not_audited(collector_factory):
    collector = collector_factory(
        evaluators={"refusals": {"kind": "refusal"}, "quality": llm_judge("http://judge.invalid")},
        evaluation={"enabled": False},
    )
    read = auth(collector.read_key)
    answer = collector.client.get("/api/evaluators/quality/agreement", headers=read).json()
    assert answer["trusted"] is None and answer["criteria"] == []
    check = collector.client.get("/api/evaluators/refusals/agreement", headers=read)
    assert check.status_code == 400 and "built-in check" in check.text
    assert collector.client.get("/api/evaluators/nope/agreement", headers=read).status_code == 404


def _gauge(registry: CollectorRegistry, name: str) -> float:
    text = generate_latest(registry).decode()
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert found, text
    return float(found.group(1))


def _agreement_row(collector: Collector) -> tuple[str, str]:
    """The review UI's agreement page: the judge's audited calls and whether it is trusted."""
    _, key = keys.create_key(collector.runtime.store, "alpha", "review")
    page = collector.client.get("/review/agreement", headers=auth(key))
    assert page.status_code == 200
    assert (
        "<title>Agreement · driftline</title>" in page.text and page.text.count('id="judges"') == 1
    )
    row = re.search(
        r'<tr data-judge="quality@1" data-criterion="accuracy">.*?<td>accuracy</td><td>(\d+)</td>'
        r'.*?<td class="trusted">(\w+)</td>', page.text, re.S,
    )  # fmt: skip
    assert row, page.text
    return row.group(1), row.group(2)
