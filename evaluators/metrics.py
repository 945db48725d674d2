"""Prometheus series of the online evaluators: calls graded, skipped and failed, judge spend."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

_E = ("evaluator", "version")


class EvaluatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.graded = Counter(
            "driftline_evaluator_graded_calls", "Calls graded and stored", _E, registry=registry
        )
        self.skipped = Counter(
            "driftline_evaluator_skipped_calls",
            "New calls not graded: not sampled, over the daily budget or the cost cap",
            (*_E, "reason"),
            registry=registry,
        )
        self.failed = Counter(
            "driftline_evaluator_failed_calls",
            "Calls the judge could not grade: unavailable (after retries) or a malformed reply",
            (*_E, "reason"),
            registry=registry,
        )
        self.spend = Counter(
            "driftline_evaluator_spend_usd", "Judge spend, from the tokens it reports", _E,
            registry=registry,
        )  # fmt: skip
        self.spend_today = Gauge(
            "driftline_evaluator_spend_today_usd",
            "Judge spend so far today (UTC), against daily_cost_cap_usd",
            _E,
            registry=registry,
        )
