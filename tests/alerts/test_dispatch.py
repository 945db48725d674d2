"""The notification policy: routes, grouping, group_wait / group_interval / repeat_interval,
resolved notifications, silences, inhibition, and no repeats across a restart."""

from __future__ import annotations

from typing import Any

import orjson

from driftline.alerts.labels import parse_matcher
from driftline.alerts.silences import Silences
from driftline.store import Store
from tests.alerts.conftest import Clock, EngineFactory, insert_calls

RULES = """
rules:
  - alert: HighErrorRate
    when: {metric: {metric: error_rate, over: 5m, above: 0.1, by: [service], min_calls: 10}}
    labels: {severity: critical}
    annotations: {summary: "{{ $labels.service }} fails"}
  - alert: SlowCalls
    when: {metric: {metric: p95_latency_ms, over: 5m, above: 1000, by: [service], min_calls: 10}}
    labels: {severity: warning}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['severity=~".+"']
      receiver: hook
receivers:
  - name: hook
    webhook: {url: "http://127.0.0.1:9/hook"}
  - name: pager
    slack: {url: "http://127.0.0.1:9/slack", send_resolved: false}
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [service]
"""


def sent(store: Store, receiver: str = "hook") -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT body FROM notifications FINAL WHERE receiver = {r:String} ORDER BY created_at, id",
        {"r": receiver},
    )
    return [orjson.loads(r["body"]) for r in rows]


def firing(body: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((a["labels"]["service"], a["status"]) for a in body["alerts"])


def test_group_wait_interval_repeat_and_resolved(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(RULES)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    engine.evaluate()
    assert sent(store) == []  # group_wait: 30s
    assert engine.dispatcher.next_due == clock.now + 30  # the loop wakes for it
    clock.advance(30)
    engine.evaluate()
    [first] = sent(store)
    assert first["version"] == "4" and first["status"] == "firing"
    assert first["groupKey"] == '{}/{severity=~".+"}:{alertname="HighErrorRate", project="alpha"}'
    assert first["groupLabels"] == {"alertname": "HighErrorRate", "project": "alpha"}
    assert first["commonAnnotations"] == {"summary": "a fails"}
    assert firing(first) == [("a", "firing")]
    assert first["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"

    clock.advance(60)  # a second service fails: same group, waits for group_interval
    insert_calls(store, clock.now, 20, errors=10, service="b")
    engine.evaluate()
    assert len(sent(store)) == 1
    clock.advance(240)  # 5 minutes after the first notification
    insert_calls(store, clock.now, 20, errors=10, service="a")
    engine.evaluate()
    assert firing(sent(store)[-1]) == [("a", "firing"), ("b", "firing")]

    clock.advance(300)  # unchanged: nothing until repeat_interval
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=10, service="b")
    engine.evaluate()
    assert len(sent(store)) == 2
    clock.advance(3300)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=10, service="b")
    engine.evaluate()
    assert len(sent(store)) == 3  # repeated after 1h

    clock.advance(400)  # b recovers (its failures age out), a keeps failing
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=0, service="b")
    engine.evaluate()
    last = sent(store)[-1]
    assert firing(last) == [("a", "firing"), ("b", "resolved")]
    assert last["status"] == "firing"
    assert [a["endsAt"] != "0001-01-01T00:00:00Z" for a in last["alerts"]] == [False, True]

    # The critical route continues: the Slack receiver got the same groups, minus resolved.
    slack = sent(store, "pager")
    assert len(slack) == 4
    assert slack[0]["text"].startswith("[FIRING:1] HighErrorRate: a fails")
    assert slack[0]["blocks"][0]["type"] == "header"


def test_restart_repeats_nothing_and_skips_nothing(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(RULES)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    engine.evaluate()
    clock.advance(30)
    engine.evaluate()
    assert len(sent(store)) == 1
    engine.close()

    clock.advance(30)
    restarted = make_engine(RULES)
    restarted.evaluate()
    assert len(sent(store)) == 1  # the group remembers what it told the receiver
    clock.advance(300)
    insert_calls(store, clock.now, 20, errors=0, service="a")
    restarted.evaluate()
    [_, resolved] = sent(store)
    assert resolved["status"] == "resolved"


def test_uncommitted_dispatch_makes_the_same_message_id(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    """A crash between the outbox and the group's record must not send twice."""
    engine = make_engine(RULES)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    clock.advance(30)
    engine.evaluate()  # pending -> firing now; group_wait counts from firing
    clock.advance(30)
    alerts = list(engine.active.values())
    first = engine.dispatcher.dispatch(alerts, set(), clock.now)
    again = engine.dispatcher.dispatch(alerts, set(), clock.now)  # no commit in between
    assert [m.id for m in first] == [m.id for m in again] and len(first) == 2
    assert engine.outbox.enqueue(first) == 2
    assert engine.outbox.enqueue(again) == 0


def test_silences_and_inhibition_mute_notifications(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(RULES)
    silences = Silences(store)
    silence = silences.create(
        "alpha", [parse_matcher('service="a"')], clock.now, clock.now + 600, "ops", "deploy",
        clock.now,
    )  # fmt: skip
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=0, service="c", latency_ms=5000)  # slow only
    insert_calls(store, clock.now, 20, errors=10, service="d", latency_ms=5000)  # both
    engine.evaluate()
    clock.advance(30)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    engine.evaluate()
    bodies = sent(store)
    # a is silenced; d's SlowCalls is inhibited by its HighErrorRate; c's SlowCalls goes out.
    shown = sorted((b["groupLabels"]["alertname"], s) for b in bodies for s, _ in firing(b))
    assert shown == [("HighErrorRate", "d"), ("SlowCalls", "c")]

    silences.expire("alpha", silence.id, clock.now)
    clock.advance(300)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=10, service="d", latency_ms=5000)
    insert_calls(store, clock.now, 20, errors=0, service="c", latency_ms=5000)
    engine.evaluate()
    bodies = sent(store)
    assert [firing(b) for b in bodies[2:]] == [[("a", "firing"), ("d", "firing")]], bodies


def test_silences_apply_to_their_project_only(store: Store, clock: Clock) -> None:
    silence = Silences(store).create(
        "alpha", [parse_matcher('service="a"')], clock.now, clock.now + 60, "ops", "x", clock.now
    )
    assert silence.mutes({"project": "alpha", "service": "a"}, clock.now)
    assert not silence.mutes({"project": "beta", "service": "a"}, clock.now)
    assert not silence.mutes({"project": "alpha", "service": "a"}, clock.now + 60)
