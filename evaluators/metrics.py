"""Prometheus series of the online evaluators: calls graded, skipped and failed, judge spend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from driftline.evaluators.agreement import JudgeTrust

_E = ("evaluator", "version")
_TRUST = ("project", *_E)


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
        self.spearman = Gauge(
            "driftline_evaluator_agreement_spearman",
            "Spearman between the judge's scores and the reviewers' on audited calls",
            (*_TRUST, "criterion"),
            registry=registry,
        )
        self.audited = Gauge(
            "driftline_evaluator_audited_calls",
            "Calls both the judge and reviewers scored, in the agreement window",
            (*_TRUST, "criterion"),
            registry=registry,
        )
        self.trusted = Gauge(
            "driftline_evaluator_trusted",
            "1: the judge agrees with people on every criterion; 0: not; -1: too few audits",
            _TRUST,
            registry=registry,
        )

    def observe_trust(self, project: str, name: str, version: str, trust: JudgeTrust) -> None:
        for c in trust.criteria:
            labels = (project, name, version, c.criterion)
            self.audited.labels(*labels).set(c.audited)
            self.spearman.labels(*labels).set(
                c.spearman if c.spearman is not None else float("nan")
            )
        state = {True: 1, False: 0, None: -1}[trust.trusted]
        self.trusted.labels(project, name, version).set(state)
