"""driftline and a real Alertmanager: alerts pushed through POST /api/v2/alerts show in its API
with the same fingerprints, resolve there, and our webhook body has Alertmanager's shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftline.alerts.payloads import webhook_body
from driftline.store import Store
from tests.alerts.alertmanager import Alertmanager, needs_alertmanager
from tests.alerts.conftest import Clock, EngineFactory, insert_calls
from tests.alerts.receiver import Receiver
from tests.conftest import wait_for

pytestmark = needs_alertmanager


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[Alertmanager, Receiver]]:
    with Receiver() as receiver:
        manager = Alertmanager(tmp_path / "am", receiver.url + "/from-alertmanager")
        try:
            yield manager, receiver
        finally:
            manager.stop()


def rules(url: str) -> str:
    return f"""
rules:
  - alert: HighErrorRate
    when: {{metric: {{metric: error_rate, over: 5m, above: 0.1, by: [service], min_calls: 10}}}}
    labels: {{severity: critical}}
    annotations: {{summary: "{{{{ $labels.service }}}} fails"}}
alertmanagers:
  - url: {url}
"""


def test_pushed_alerts_fire_and_resolve_in_alertmanager(
    store: Store, make_engine: EngineFactory, peers: tuple[Alertmanager, Receiver]
) -> None:
    manager, receiver = peers
    clock = Clock(time.time())  # Alertmanager judges endsAt against its own clock
    engine = make_engine(rules(manager.url), on=clock)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    insert_calls(store, clock.now, 20, errors=10, service="b")
    engine.evaluate()
    assert engine.deliver() == 1  # one push per project

    shown = manager.alerts()
    ours = {a.labels["service"]: a for a in engine.active.values()}
    assert {a["labels"]["service"]: a["fingerprint"] for a in shown} == {
        s: a.fingerprint for s, a in ours.items()
    }
    assert all(a["status"]["state"] == "active" for a in shown)
    assert shown[0]["annotations"]["summary"] in ("a fails", "b fails")
    assert shown[0]["generatorURL"].startswith("http://driftline.test/api/alerts?fingerprint=")
    assert "HighErrorRate" in manager.amtool("alert", "query", "-o", "simple")

    # Alertmanager's own notification reaches its webhook receiver: the groups are live.
    fired = wait_for(lambda: receiver.requests, "Alertmanager sent nothing")[0].json()
    assert fired["status"] == "firing"

    # a recovers: the next push carries its end time, and Alertmanager resolves it.
    clock.advance(1)
    insert_calls(store, clock.now, 200, errors=0, service="a")
    engine.evaluate()
    engine.deliver()
    wait_for(
        lambda: [a["labels"]["service"] for a in manager.alerts()] == ["b"],
        "a did not resolve in Alertmanager",
    )
    resolved = wait_for(
        lambda: [
            a for r in receiver.requests for a in r.json()["alerts"]
            if a["status"] == "resolved"
        ],
        "no resolved notification from Alertmanager",
    )  # fmt: skip
    assert resolved[0]["fingerprint"] == ours["a"].fingerprint


def test_our_webhook_body_has_alertmanagers_shape(
    store: Store, make_engine: EngineFactory, peers: tuple[Alertmanager, Receiver]
) -> None:
    """Alertmanager's own webhook body for the same alert is the reference for ours."""
    manager, receiver = peers
    clock = Clock(time.time())
    engine = make_engine(rules(manager.url), on=clock)
    insert_calls(store, clock.now, 20, errors=10, service="a")
    engine.evaluate()
    engine.deliver()
    theirs = wait_for(lambda: receiver.requests, "Alertmanager sent nothing")[0].json()
    [alert] = engine.active.values()
    ours = webhook_body(
        "capture", '{}:{alertname="HighErrorRate", project="alpha"}',
        {"alertname": "HighErrorRate", "project": "alpha"}, [(alert, "firing")],
        "http://driftline.test",
    )  # fmt: skip

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__

    assert shape(ours) == shape(theirs)
    for key in ("status", "receiver", "groupLabels", "commonLabels", "commonAnnotations",
                "groupKey", "version"):  # fmt: skip
        assert ours[key] == theirs[key], key
    assert ours["alerts"][0]["fingerprint"] == theirs["alerts"][0]["fingerprint"]
    assert ours["alerts"][0]["labels"] == theirs["alerts"][0]["labels"]
    assert ours["alerts"][0]["endsAt"] == theirs["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
