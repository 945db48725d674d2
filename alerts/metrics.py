"""Prometheus series of the alert engine: alert states by rule, notifications by receiver,
the outbox backlog, retraining jobs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Gauge(
            "driftline_alerts", "Alerts by rule and state", ("rule", "state"), registry=registry
        )
        self.evaluations = Counter(
            "driftline_alert_evaluations",
            "Rule evaluations, by outcome",
            ("rule", "outcome"),
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "driftline_alert_evaluation_seconds",
            "Time to evaluate every rule once",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.notifications = Counter(
            "driftline_notifications",
            "Notification deliveries: sent, failed (will retry) or dead (gave up)",
            ("receiver", "notifier", "outcome"),
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "driftline_notification_delivery_seconds",
            "Time of one delivery attempt",
            ("notifier",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.pending = Gauge(
            "driftline_notifications_pending", "Messages in the outbox not yet delivered",
            registry=registry,
        )  # fmt: skip
        self.dead = Gauge(
            "driftline_notifications_dead", "Messages dead-lettered (given up)", registry=registry
        )
        self.retrain_jobs = Counter(
            "driftline_retrain_jobs",
            "Retraining jobs, by rule and what happened (started, skipped_cooldown, failed, ...)",
            ("rule", "status"),
            registry=registry,
        )
