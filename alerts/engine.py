"""The alert engine: evaluate every rule, move alerts through their lifecycle, start retraining,
and hand due notifications to the outbox; `AlertLoop` runs it on threads."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from prometheus_client import CollectorRegistry

from driftline.alerts import conditions
from driftline.alerts.config import AlertSettings
from driftline.alerts.dispatch import Dispatcher
from driftline.alerts.labels import fingerprint
from driftline.alerts.metrics import AlertMetrics
from driftline.alerts.notifiers import (
    AlertmanagerSender,
    Message,
    Sender,
    SlackSender,
    WebhookSender,
)
from driftline.alerts.outbox import Outbox
from driftline.alerts.payloads import alertmanager_body
from driftline.alerts.retrain import RETRAIN_RECEIVER, RetrainTrigger
from driftline.alerts.rules import FlagsCondition, Rule, RuleFile
from driftline.alerts.silences import Silences
from driftline.alerts.state import Alert, AlertLog, Sample, step
from driftline.alerts.verdicts import act_on_verdict
from driftline.store import Store

log = logging.getLogger("driftline.alerts")
KEEP_RESOLVED = 3600.0  # resolved alerts stay in memory (and the API's default view) this long
_TEMPLATE = re.compile(r"\{\{\s*\$(?:labels\.([a-zA-Z_][a-zA-Z0-9_]*)|(value))\s*\}\}")


class AlertEngine:
    def __init__(
        self,
        store: Store,
        rules: RuleFile,
        settings: AlertSettings,
        external_url: str,
        data: Path,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rules = rules
        self.settings = settings
        self.external_url = external_url.rstrip("/")
        self.clock = clock
        self.metrics = AlertMetrics(registry) if registry is not None else None
        self.log = AlertLog(store)
        self.silences = Silences(store)
        self.dispatcher = Dispatcher(store, rules, self.external_url)
        self._client = httpx.Client(follow_redirects=False)
        self._senders = self._build_senders()
        self.outbox = Outbox(store, self._sender, settings.outbox, self.metrics, clock)
        self.retrain = (
            RetrainTrigger(
                store,
                rules.retraining,
                self.outbox.enqueue,
                data / "retrain",
                self.metrics,
                api_url=self.external_url,
            )
            if rules.retraining is not None
            else None
        )
        self.active: dict[str, Alert] = self.log.load(clock() - KEEP_RESOLVED)
        self._pushed_at = 0.0
        self._lock = threading.Lock()
        self._over_limit: set[tuple[str, str]] = set()  # (rule, project) warned of

    def evaluate(self) -> list[Alert]:
        """One round: every rule, then notifications; returns the alerts that changed."""
        with self._lock:
            started, now = time.monotonic(), self.clock()
            changed: list[Alert] = []
            fired: list[tuple[Rule, Alert]] = []
            for rule in self.rules.rules:
                try:
                    samples = conditions.evaluate(self.store, rule, now)
                except Exception:
                    log.exception(
                        "rule %s could not be evaluated; its alerts keep their state", rule.alert
                    )
                    self._count(rule, "error")
                    continue
                self._count(rule, "ok")
                samples = self._bounded(rule, samples)
                for alert, was in self._advance(rule, samples, now):
                    changed.append(alert)
                    if alert.state == "firing" and was != "firing":
                        fired.append((rule, alert))
            self.log.save(changed)
            self._retrain(fired, now)
            for rule, alert in fired:
                if rule.registry is not None:
                    try:
                        act_on_verdict(self.store, rule.registry, alert)
                    except Exception:  # the registry's trouble must not stop the alerts
                        log.exception("rule %s: the registry could not act", rule.alert)
            self._notify(now, pushed=any(a.state in ("firing", "resolved") for a in changed))
            self._forget(now)
            if self.metrics:
                self.metrics.evaluation_seconds.observe(time.monotonic() - started)
                self._gauge()
            return changed

    def deliver(self) -> int:
        """Attempt the outbox's due messages once."""
        return self.outbox.deliver_due()

    def close(self) -> None:
        self.outbox.close()
        self._client.close()

    # -- lifecycle -----------------------------------------------------------------------------

    def _bounded(self, rule: Rule, samples: list[Sample]) -> list[Sample]:
        """At most `max_alerts_per_rule` of a rule's alerts per project, those already active
        first: label values such as model and service come from spans, which anyone with an
        ingest key writes, and one project's made-up names must not bury another's alerts."""
        limit = self.settings.max_alerts_per_rule
        by_project: dict[str, list[Sample]] = {}
        for sample in samples:
            by_project.setdefault(sample.labels.get("project", ""), []).append(sample)
        kept: list[Sample] = []
        for project, found in by_project.items():
            if len(found) > limit:
                found.sort(key=lambda s: fingerprint(s.labels) not in self.active)  # stable
                if (rule.alert, project) not in self._over_limit:
                    log.warning(
                        "rule %s found %d label sets in project %s; alerting on %d "
                        "(alerts.max_alerts_per_rule)", rule.alert, len(found), project, limit,
                    )  # fmt: skip
                self._over_limit.add((rule.alert, project))
            kept += found[:limit]
        return kept

    def _advance(
        self, rule: Rule, samples: list[Sample], now: float
    ) -> list[tuple[Alert, str | None]]:
        """Step each of the rule's alerts; return (alert, previous state) for those that changed."""
        found = {fingerprint(s.labels): s for s in samples}
        mine = {fp for fp, a in self.active.items() if a.rule == rule.alert}
        changed: list[tuple[Alert, str | None]] = []
        for fp in mine | found.keys():
            old = self.active.get(fp)
            new = step(old, found.get(fp), rule.alert, rule.for_, now)
            if new is None or new is old:
                continue
            new.annotations = self._annotations(rule, new)
            if old is None or _differs(old, new):
                changed.append((new, old.state if old else None))
            self.active[fp] = new
        return changed

    def _retrain(self, fired: list[tuple[Rule, Alert]], now: float) -> None:
        """Every firing alert of a `retrain:` rule starts a job once its cooldown allows."""
        if self.retrain is None:
            return
        fresh = {a.fingerprint for _, a in fired}
        for rule in self.rules.rules:
            if rule.retrain is None:
                continue
            for alert in self.active.values():
                if alert.rule == rule.alert and alert.state == "firing":
                    self.retrain.fire(rule, alert, now, alert.fingerprint in fresh)

    def _annotations(self, rule: Rule, alert: Alert) -> dict[str, str]:
        def fill(match: re.Match[str]) -> str:
            if match.group(2):
                return f"{alert.value:.4g}"
            return alert.labels.get(match.group(1), "")

        out = {k: _TEMPLATE.sub(fill, v) for k, v in rule.annotations.items()}
        review = _review_link(rule, alert)
        if review and "review_url" not in out:
            out["review_url"] = f"{self.external_url}/api/review-queue?{urlencode(review)}"
        return out

    def _forget(self, now: float) -> None:
        self.active = {
            fp: a
            for fp, a in self.active.items()
            if a.state in ("pending", "firing")
            or (a.state == "resolved" and (a.resolved_at or 0) > now - KEEP_RESOLVED)
        }

    # -- notifications ---------------------------------------------------------------------------

    def _notify(self, now: float, pushed: bool) -> None:
        alerts = list(self.active.values())
        muted = self.dispatcher.muted(alerts, self.silences.list(), now)
        messages = self.dispatcher.dispatch(alerts, muted, now)
        if self.rules.alertmanagers and (
            pushed or now - self._pushed_at >= self.settings.resend_delay
        ):
            messages += self._alertmanager_pushes(alerts, now)
        self.outbox.enqueue(messages)
        self.dispatcher.commit(now)

    def _alertmanager_pushes(self, alerts: list[Alert], now: float) -> list[Message]:
        """Every firing alert, and those resolved since the last push, per project."""
        since = self._pushed_at - self.settings.evaluation_interval
        shown = [
            a for a in alerts
            if a.state == "firing" or (a.state == "resolved" and (a.resolved_at or 0) >= since)
        ]  # fmt: skip
        self._pushed_at = now
        messages = []
        for project in sorted({a.project for a in shown}):
            body = orjson.dumps(
                alertmanager_body(
                    [a for a in shown if a.project == project],
                    self.external_url,
                    now,
                    self.settings.resend_delay,
                )
            )
            for name in self._alertmanager_names():
                ident = hashlib.sha256(f"{name}\0{project}\0{now}".encode()).hexdigest()[:32]
                messages.append(
                    Message(
                        "msg_" + ident,
                        project,
                        name,
                        "alertmanager",
                        f"alertmanager:{project}",
                        body,
                        now,
                    )
                )
        return messages

    def _alertmanager_names(self) -> list[str]:
        return [name for name, (kind, _) in self._senders.items() if kind == "alertmanager"]

    def _build_senders(self) -> dict[str, tuple[str, Sender]]:
        senders: dict[str, tuple[str, Sender]] = {}
        for receiver in self.rules.receivers:
            if receiver.webhook is not None:
                hook = receiver.webhook
                secret = hook.secret.get_secret_value() if hook.secret else None
                senders[receiver.name] = (
                    "webhook",
                    WebhookSender(self._client, hook.url, secret, hook.timeout),
                )
            elif receiver.slack is not None:
                slack = receiver.slack
                senders[receiver.name] = (
                    "slack",
                    SlackSender(self._client, slack.url.get_secret_value(), slack.timeout),
                )
        for target in self.rules.alertmanagers:
            senders[_alertmanager_name(target.url)] = (
                "alertmanager",
                AlertmanagerSender(self._client, target.url, target.timeout),
            )
        launcher = self.rules.retraining
        if launcher is not None and launcher.webhook is not None:
            secret = launcher.webhook.secret.get_secret_value() if launcher.webhook.secret else None
            senders[RETRAIN_RECEIVER] = (
                "retrain",
                WebhookSender(self._client, launcher.webhook.url, secret, launcher.webhook.timeout),
            )
        return senders

    def _sender(self, message: Message) -> Sender | None:
        found = self._senders.get(message.receiver)
        return found[1] if found is not None and found[0] == message.kind else None

    # -- metrics ---------------------------------------------------------------------------------

    def _count(self, rule: Rule, outcome: str) -> None:
        if self.metrics:
            self.metrics.evaluations.labels(rule.alert, outcome).inc()

    def _gauge(self) -> None:
        assert self.metrics is not None
        counts = Counter((a.rule, a.state) for a in self.active.values())
        for rule in self.rules.rules:
            for state in ("pending", "firing"):
                self.metrics.alerts.labels(rule.alert, state).set(counts[(rule.alert, state)])


def _differs(old: Alert, new: Alert) -> bool:
    return (old.state, old.value, old.evidence, old.annotations) != (
        new.state, new.value, new.evidence, new.annotations,
    )  # fmt: skip


def _review_link(rule: Rule, alert: Alert) -> dict[str, str]:
    """Review-queue filters that show the evidence behind the alert."""
    condition = rule.when.condition
    if isinstance(condition, FlagsCondition):
        return {"reason": condition.reason, "reference": alert.labels.get("reference", "")}
    window: Any = alert.evidence.get("window_key")
    return {"window_key": str(window)} if window else {}


def _alertmanager_name(url: str) -> str:
    """The receiver name of an Alertmanager target: its address without credentials."""
    parts = urlsplit(url)
    return f"alertmanager:{parts.hostname}:{parts.port or ''}{parts.path.rstrip('/')}"


class AlertLoop:
    """Evaluates every `evaluation_interval` (or at once when poked) and delivers the outbox
    every `tick_seconds`, on two threads, until stopped."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._threads = [
            threading.Thread(target=self._evaluate, name="driftline-alerts", daemon=True),
            threading.Thread(target=self._deliver, name="driftline-outbox", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def poke(self) -> None:
        """Evaluate now (after a detector pass, new findings may fire alerts)."""
        self._poke.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._poke.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        if self.engine.retrain is not None:
            self.engine.retrain.wait(timeout)
        self.engine.close()

    def _evaluate(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.evaluate()
            except Exception:
                log.exception("alert evaluation failed; retrying next interval")
            # Wake for the next evaluation, or sooner when a group's group_wait (or interval)
            # ends, so notifications are not late by up to an evaluation interval.
            engine = self.engine
            due = engine.dispatcher.next_due - engine.clock()
            self._poke.wait(max(0.0, min(engine.settings.evaluation_interval, due)))
            self._poke.clear()

    def _deliver(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.deliver()
            except Exception:
                log.exception("outbox delivery failed; retrying")
            self._stop.wait(self.engine.settings.outbox.tick_seconds)
