"""Alerts move inactive -> pending -> firing -> resolved from what the store holds, and a
restart (a new engine on the same store) neither loses nor repeats them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from driftline.alerts.state import AlertLog
from driftline.store import Store
from tests.alerts.conftest import Clock, EngineFactory, insert_calls, insert_window

ERRORS = """
rules:
  - alert: HighErrorRate
    when:
      metric: {metric: error_rate, over: 5m, above: 0.1, by: [service, model], min_calls: 20}
    for: 1m
    labels: {severity: critical}
    annotations:
      summary: "{{ $labels.model }} fails {{ $value }} of {{ $labels.service }}'s calls"
"""


def test_metric_rule_pending_then_firing_then_resolved(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    registry = CollectorRegistry()
    engine = make_engine(ERRORS, registry)
    insert_calls(store, clock.now, 40, errors=2)  # 5%: below the threshold
    insert_calls(store, clock.now, 30, errors=0, service="other")
    assert engine.evaluate() == []

    insert_calls(store, clock.now, 40, errors=20)  # now 22 of 80 calls of bot/m1 failed
    [alert] = engine.evaluate()
    assert alert.state == "pending"
    assert alert.labels == {
        "alertname": "HighErrorRate", "project": "alpha", "service": "bot", "model": "m1",
        "severity": "critical",
    }  # fmt: skip
    assert alert.value == 22 / 80
    assert alert.annotations["summary"] == "m1 fails 0.275 of bot's calls"
    assert alert.evidence == {"metric": "error_rate", "calls": 80, "over_seconds": 300.0}

    clock.advance(30)
    assert engine.evaluate() == []  # still pending, nothing changed
    clock.advance(30)
    [fired] = engine.evaluate()
    assert (fired.state, fired.active_at, fired.fired_at) == ("firing", clock.now - 60, clock.now)
    assert (
        registry.get_sample_value("driftline_alerts", {"rule": "HighErrorRate", "state": "firing"})
        == 1
    )

    clock.advance(300)  # the failed calls leave the 5-minute window
    [resolved] = engine.evaluate()
    assert (resolved.state, resolved.resolved_at) == ("resolved", clock.now)
    stored = AlertLog(store).query()
    assert [(a.state, a.fired_at) for a in stored] == [("resolved", fired.fired_at)]


def test_a_condition_that_stops_while_pending_never_fires(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(ERRORS)
    insert_calls(store, clock.now, 40, errors=20)
    [pending] = engine.evaluate()
    assert pending.state == "pending"
    clock.advance(301)
    [gone] = engine.evaluate()
    assert gone.state == "inactive"
    insert_calls(store, clock.now, 40, errors=20)
    [again] = engine.evaluate()  # a new activation, timed from now
    assert (again.state, again.active_at) == ("pending", clock.now)
    assert [a.state for a in AlertLog(store).query()] == ["pending", "inactive"]


def test_restart_neither_loses_nor_repeats_a_firing_alert(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(ERRORS)
    insert_calls(store, clock.now, 40, errors=20)
    engine.evaluate()
    clock.advance(60)
    [fired] = engine.evaluate()
    engine.close()

    clock.advance(10)
    restarted = make_engine(ERRORS)
    assert [a.state for a in restarted.active.values()] == ["firing"]
    assert restarted.evaluate() == []  # still firing: no change, nothing stored again
    [same] = [a for a in restarted.active.values()]
    assert (same.active_at, same.fired_at) == (fired.active_at, fired.fired_at)


DRIFT = """
rules:
  - alert: EmbeddingDrift
    when: {drift: {consecutive: 2}}
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.service }} drifts from {{ $labels.reference }}"}
"""


def test_drift_fires_after_k_windows_and_resolves_when_traffic_returns(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(DRIFT)
    insert_window(store, clock.now - 20, consecutive=1)
    assert engine.evaluate() == []
    key = insert_window(store, clock.now - 10, consecutive=2)
    [alert] = engine.evaluate()
    assert alert.state == "firing"  # for: 0s fires at once
    assert alert.labels == {
        "alertname": "EmbeddingDrift", "project": "alpha", "reference": "bot-v1",
        "service": "bot", "severity": "warning",
    }  # fmt: skip
    assert alert.evidence["window_key"] == key
    assert alert.evidence["tests"][0]["p_value"] == 0.002
    assert alert.annotations["summary"] == "bot drifts from bot-v1"
    assert alert.annotations["review_url"] == (
        "http://driftline.test/api/review-queue?window_key="
        + key.replace("@", "%40").replace("/", "%2F")
    )
    clock.advance(60)
    insert_window(store, clock.now - 5, consecutive=0)  # the next window looks like the reference
    [resolved] = engine.evaluate()
    assert resolved.state == "resolved"


FLAGS = """
rules:
  - alert: LowRelevance
    when: {flags: {reason: low_relevance, over: 15m, rate_above: 0.05}}
  - alert: Novel
    when: {flags: {reason: novel, over: 15m, at_least: 30}}
"""


def test_flag_rates_and_counts_over_the_trailing_period(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(FLAGS)
    insert_window(store, clock.now - 1200, 0, flags={"low_relevance": 400})  # too old to count
    insert_window(store, clock.now - 600, 0, flags={"low_relevance": 20, "novel": 10})
    assert engine.evaluate() == []  # 20 of 500 = 4%, 10 novel
    insert_window(store, clock.now - 60, 0, flags={"low_relevance": 40, "novel": 25})
    fired = {a.rule: a for a in engine.evaluate()}
    assert fired["LowRelevance"].value == 60 / 1000
    assert fired["Novel"].value == 35
    assert fired["LowRelevance"].evidence["flagged"] == 60
    assert fired["Novel"].annotations["review_url"].endswith("?reason=novel&reference=bot-v1")


def test_made_up_model_names_cannot_bury_other_alerts(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    # Whoever holds alpha's ingest key sends failing calls under 30 invented model names.
    engine = make_engine(ERRORS.replace("for: 1m", "for: 0s"), max_alerts_per_rule=5)
    insert_calls(store, clock.now, 20, errors=20, model="real")
    assert [a.labels["model"] for a in engine.evaluate()] == ["real"]
    for i in range(30):
        insert_calls(store, clock.now, 20, errors=20, model=f"fake-{i:02d}")
    insert_calls(store, clock.now, 20, errors=20, project="beta")
    clock.advance(1)
    engine.evaluate()
    firing = [a for a in engine.active.values() if a.state == "firing"]
    alpha = [a.labels["model"] for a in firing if a.labels["project"] == "alpha"]
    assert len(alpha) == 5 and "real" in alpha  # the one already firing is kept
    assert [a.labels["model"] for a in firing if a.labels["project"] == "beta"] == ["m1"]
