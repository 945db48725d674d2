"""Alerts and their lifecycle (inactive -> pending -> firing -> resolved), kept in the store so a
restart neither loses nor repeats one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from driftline.alerts import tables
from driftline.alerts.labels import fingerprint
from driftline.alerts.timestamps import ms_column, seconds
from driftline.store import Store

State = Literal["pending", "firing", "resolved", "inactive"]


@dataclass
class Sample:
    """What a rule's condition found for one label set: active now, with a value and evidence."""

    labels: dict[str, str]
    value: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Alert:
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: State
    value: float
    evidence: dict[str, Any]
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    updated_at: float = 0.0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def project(self) -> str:
        return self.labels.get("project", "")


def step(
    alert: Alert | None, sample: Sample | None, rule: str, hold: float, now: float
) -> Alert | None:
    """The alert after one evaluation: `sample` is the condition's finding (None: not active);
    `hold` is the rule's `for:`. None when there was and is nothing active."""
    if sample is None:
        if alert is None or alert.state in ("resolved", "inactive"):
            return alert
        if alert.state == "pending":
            return _with(alert, state="inactive", updated_at=now)
        return _with(alert, state="resolved", resolved_at=now, updated_at=now)
    if alert is None or alert.state in ("resolved", "inactive"):
        alert = Alert(
            rule=rule, labels=sample.labels, annotations={}, state="pending", value=sample.value,
            evidence=sample.evidence, active_at=now, updated_at=now,
        )  # fmt: skip
    alert = _with(alert, value=sample.value, evidence=sample.evidence)
    if alert.state == "pending" and now - alert.active_at >= hold:
        alert = _with(alert, state="firing", fired_at=now, updated_at=now)
    return alert


def _with(alert: Alert, **changes: Any) -> Alert:
    return Alert(**{**alert.__dict__, **changes})


class AlertLog:
    """Alerts in the `alerts` table: one row per activation, newest version wins."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        tables.insert_alerts(
            self.store,
            {
                "project_id": [a.project for a in alerts],
                "fingerprint": [a.fingerprint for a in alerts],
                "rule": [a.rule for a in alerts],
                "labels": [sorted(a.labels.items()) for a in alerts],
                "annotations": [sorted(a.annotations.items()) for a in alerts],
                "state": [a.state for a in alerts],
                "value": [float(a.value) for a in alerts],
                "evidence": [json.dumps(a.evidence, sort_keys=True) for a in alerts],
                "active_at": ms_column([a.active_at for a in alerts]),
                "fired_at": ms_column([a.fired_at for a in alerts]),
                "resolved_at": ms_column([a.resolved_at for a in alerts]),
                "updated_at": ms_column([a.updated_at for a in alerts]),
            },
        )

    def load(self, resolved_since: float) -> dict[str, Alert]:
        """Pending and firing alerts, and those resolved after `resolved_since`, by fingerprint."""
        rows = tables.current_alerts(self.store, round(resolved_since * 1000))
        latest: dict[str, Alert] = {}
        for alert in sorted(map(_alert, rows), key=lambda a: a.active_at):
            latest[alert.fingerprint] = alert
        return latest

    def query(
        self,
        project: str | None = None,
        states: Sequence[str] = (),
        rule: str | None = None,
        fingerprint: str | None = None,
        limit: int = 100_000,
    ) -> list[Alert]:
        """Alerts newest first: all, or those of `project`, in `states`, of `rule`..."""
        rows = tables.alerts(self.store, project, states, rule, fingerprint, limit)
        return [_alert(r) for r in rows]


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(
        rule=row["rule"],
        labels=dict(row["labels"]),
        annotations=dict(row["annotations"]),
        state=row["state"],
        value=row["value"],
        evidence=json.loads(row["evidence"] or "{}"),
        active_at=row["active_ms"] / 1000,
        fired_at=seconds(row["fired_ms"]),
        resolved_at=seconds(row["resolved_ms"]),
        updated_at=row["updated_ms"] / 1000,
    )
