"""The notification policy, as Alertmanager's: a route tree picks receivers, alerts are grouped
by labels, and each group notifies after `group_wait`, on changes every `group_interval`, and
again every `repeat_interval`. Silences and inhibition mute alerts; what each group last told
its receiver is stored, so a restart neither repeats nor skips a notification."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from driftline.alerts import tables
from driftline.alerts.labels import matches_all, render
from driftline.alerts.notifiers import Message
from driftline.alerts.payloads import slack_body, webhook_body
from driftline.alerts.rules import InhibitRule, Receiver, Route, RuleFile
from driftline.alerts.silences import Silence
from driftline.alerts.state import Alert
from driftline.alerts.timestamps import ms_column
from driftline.store import Store

# Alertmanager's defaults.
GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL = 30.0, 300.0, 4 * 3600.0


@dataclass(frozen=True)
class Policy:
    """One matched route with every inherited setting resolved."""

    key: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float


def _resolve(route: Route, parent: Policy | None, key: str) -> Policy:
    if parent is None:
        parent = Policy(key, "", ("alertname",), GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL)
    return Policy(
        key=key,
        receiver=route.receiver or parent.receiver,
        group_by=tuple(route.group_by) if route.group_by is not None else parent.group_by,
        group_wait=_pick(route.group_wait, parent.group_wait),
        group_interval=_pick(route.group_interval, parent.group_interval),
        repeat_interval=_pick(route.repeat_interval, parent.repeat_interval),
    )


def _pick(own: float | None, inherited: float) -> float:
    return own if own is not None else inherited


def match_routes(
    route: Route, labels: dict[str, str], parent: Policy | None = None, key: str = "{}"
) -> list[Policy]:
    """The policies an alert goes to: the deepest matching routes, siblings tried in order
    until one matches without `continue: true`."""
    policy = _resolve(route, parent, key)
    found: list[Policy] = []
    for child in route.routes:
        if not matches_all(child.matchers, labels):
            continue
        child_key = f"{key}/{{{','.join(str(m) for m in child.matchers)}}}"
        found += match_routes(child, labels, policy, child_key)
        if not child.continue_:
            break
    return found or [policy]


def inhibited(alerts: Iterable[Alert], rules: list[InhibitRule]) -> set[str]:
    """Fingerprints of firing alerts muted by another firing alert through an inhibit rule."""
    firing = [a for a in alerts if a.state == "firing"]
    muted = set()
    for rule in rules:
        sources = [a for a in firing if matches_all(rule.source_matchers, a.labels)]
        for target in firing:
            if not matches_all(rule.target_matchers, target.labels):
                continue
            if any(
                s.fingerprint != target.fingerprint
                and all(s.labels.get(n, "") == target.labels.get(n, "") for n in rule.equal)
                for s in sources
            ):
                muted.add(target.fingerprint)
    return muted


@dataclass
class Group:
    key: str
    receiver: str
    sequence: int = 0
    notified: dict[str, str] = field(default_factory=dict)  # fingerprint -> firing|resolved
    notified_at: float | None = None


class Dispatcher:
    def __init__(self, store: Store, rules: RuleFile, external_url: str) -> None:
        self.store = store
        self.rules = rules
        self.external_url = external_url
        self.receivers: dict[str, Receiver] = {r.name: r for r in rules.receivers}
        self.groups = self._load()
        self._staged: list[Group] = []
        self.next_due = math.inf  # when the earliest waiting group is due, as of `dispatch`

    def muted(self, alerts: list[Alert], silences: list[Silence], now: float) -> set[str]:
        """Firing alerts that must not notify: silenced or inhibited."""
        silenced = {a.fingerprint for a in alerts if any(s.mutes(a.labels, now) for s in silences)}
        return silenced | inhibited(alerts, self.rules.inhibit_rules)

    def dispatch(self, alerts: list[Alert], muted: set[str], now: float) -> list[Message]:
        """The messages due now. The groups' new state is staged: `commit` it once the messages
        are in the outbox. Uncommitted, the next call makes the same messages with the same ids,
        which the outbox stores once."""
        if self.rules.route is None:
            return []
        members: dict[tuple[str, str], tuple[Policy, dict[str, str], list[Alert]]] = {}
        for alert in alerts:
            if alert.state not in ("firing", "resolved") or alert.fingerprint in muted:
                continue
            for policy in match_routes(self.rules.route, alert.labels):
                labels = _group_labels(policy, alert.labels)
                key = f"{policy.key}:{render(labels)}"
                entry = members.setdefault((policy.receiver, key), (policy, labels, []))
                entry[2].append(alert)
        messages: list[Message] = []
        self._staged = []
        self.next_due = math.inf
        for (receiver, key), (policy, labels, group_alerts) in members.items():
            old = self.groups.get((receiver, key)) or Group(key, receiver)
            group = Group(old.key, old.receiver, old.sequence, dict(old.notified), old.notified_at)
            message = self._flush(group, policy, labels, group_alerts, now)
            if message is not None:
                messages.append(message)
            if (group.sequence, group.notified_at) != (old.sequence, old.notified_at):
                self._staged.append(group)
        return messages

    def commit(self, now: float) -> None:
        """Store and adopt the group states staged by the last `dispatch`."""
        self._save(self._staged, now)
        for group in self._staged:
            self.groups[(group.receiver, group.key)] = group
        self._staged = []

    def _flush(
        self, group: Group, policy: Policy, labels: dict[str, str], alerts: list[Alert], now: float
    ) -> Message | None:
        receiver = self.receivers[policy.receiver]
        firing = sorted((a for a in alerts if a.state == "firing"), key=lambda a: a.fingerprint)
        resolved = sorted(
            (a for a in alerts if a.state == "resolved" and group.notified.get(a.fingerprint)),
            key=lambda a: a.fingerprint,
        )
        told = {fp for fp, status in group.notified.items() if status == "firing"}
        now_firing = {a.fingerprint for a in firing}
        if group.notified_at is None:
            if not firing:
                return None
            due = min(a.fired_at or a.active_at for a in firing) + policy.group_wait
        elif now_firing != told:
            due = group.notified_at + policy.group_interval
        elif firing:
            due = group.notified_at + policy.repeat_interval
        else:
            return None
        if now < due:
            self.next_due = min(self.next_due, due)
            return None
        if not firing and not receiver.send_resolved:
            self._record(group, firing, now)
            return None
        shown = [(a, "firing") for a in firing]
        if receiver.send_resolved:
            shown += [(a, "resolved") for a in resolved]
        body = webhook_body(receiver.name, group.key, labels, shown, self.external_url)
        payload = slack_body(body) if receiver.kind == "slack" else body
        group.sequence += 1
        self._record(group, firing, now)
        # The moment too: a new installation's groups count from 1 again, and a receiver that
        # deduplicates by webhook-id must not take its first notice for an old one.
        ident = hashlib.sha256(
            f"{receiver.name}\0{group.key}\0{group.sequence}\0{now:.6f}".encode()
        )
        return Message(
            id="msg_" + ident.hexdigest()[:32],
            project=labels.get("project", ""),
            receiver=receiver.name,
            kind=receiver.kind,
            group_key=group.key,
            body=orjson.dumps(payload),
            created_at=now,
        )

    @staticmethod
    def _record(group: Group, firing: list[Alert], now: float) -> None:
        group.notified = {a.fingerprint: "firing" for a in firing}
        group.notified_at = now

    def _load(self) -> dict[tuple[str, str], Group]:
        return {
            (r["receiver"], r["group_key"]): Group(
                r["group_key"],
                r["receiver"],
                r["sequence"],
                dict(r["notified"]),
                r["notified_ms"] / 1000,
            )
            for r in tables.alert_groups(self.store)
        }

    def _save(self, groups: list[Group], now: float) -> None:
        if not groups:
            return
        tables.insert_alert_groups(
            self.store,
            {
                "group_key": [g.key for g in groups],
                "receiver": [g.receiver for g in groups],
                "sequence": [g.sequence for g in groups],
                "notified": [sorted(g.notified.items()) for g in groups],
                "notified_at": ms_column([g.notified_at for g in groups]),
                "updated_at": ms_column([now] * len(groups)),
            },
        )


def _group_labels(policy: Policy, labels: dict[str, str]) -> dict[str, str]:
    """The grouping labels; `project` always, so each notification belongs to one project."""
    if "..." in policy.group_by:
        return dict(labels)
    names = {"project", *policy.group_by}
    return {n: labels[n] for n in sorted(names) if n in labels}
