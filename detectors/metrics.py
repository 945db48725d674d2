"""Prometheus series of the detectors: latest statistics and p-values, drift state, flags."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftline.detectors.result import TwoSampleResult

if TYPE_CHECKING:
    from driftline.detectors.flags import Flag
    from driftline.detectors.references import Reference

_REF = ("project", "reference")


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.statistic = Gauge(
            "driftline_drift_statistic",
            "Latest window's test statistic",
            (*_REF, "test"),
            registry=registry,
        )
        self.p_value = Gauge(
            "driftline_drift_p_value", "Latest window's p-value", (*_REF, "test"), registry=registry
        )
        self.effect_size = Gauge(
            "driftline_drift_effect_size",
            "Latest window's effect size",
            (*_REF, "test"),
            registry=registry,
        )
        self.drifting = Gauge(
            "driftline_drift_drifting",
            "1 when the latest window drifts (joint permutation test across the tests)",
            _REF,
            registry=registry,
        )
        self.consecutive = Gauge(
            "driftline_drift_consecutive_windows",
            "Drifting windows in a row",
            _REF,
            registry=registry,
        )
        self.windows = Counter(
            "driftline_drift_windows", "Windows tested", (*_REF, "drifting"), registry=registry
        )
        self.flags = Counter(
            "driftline_flags", "Calls flagged, by reason", ("project", "reason"), registry=registry
        )
        self.embedded = Counter("driftline_embedded_calls", "Calls embedded", registry=registry)
        self.skipped = Counter(
            "driftline_embedding_skipped_calls",
            "Calls left out of the embedded sample under overload (backlog policy)",
            registry=registry,
        )
        self.lag = Gauge(
            "driftline_detector_lag_seconds",
            "How long the oldest call waiting to be embedded has waited (0: none waits)",
            registry=registry,
        )
        self.waiting = Gauge(
            "driftline_detector_pending_calls",
            "Calls waiting to be embedded",
            registry=registry,
        )
        self.window_seconds = Histogram(
            "driftline_detector_window_seconds",
            "Time to test one window",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )

    def observe_embedding(self, skipped: int, lag: float, waiting: int) -> None:
        """After each batch, so progress shows within seconds, not once per pass (the embedded
        count moves as vectors are stored)."""
        self.skipped.inc(skipped)
        self.lag.set(lag if waiting else 0.0)
        self.waiting.set(waiting)

    def observe_window(
        self,
        reference: Reference,
        results: list[TwoSampleResult],
        drifting: bool,
        consecutive: int,
        per_call: list[list[Flag]],
        seconds: float,
    ) -> None:
        labels = (reference.project, reference.name)
        for result in results:
            self.statistic.labels(*labels, result.test).set(result.statistic)
            self.p_value.labels(*labels, result.test).set(result.p_value)
            self.effect_size.labels(*labels, result.test).set(result.effect_size)
        self.drifting.labels(*labels).set(int(drifting))
        self.consecutive.labels(*labels).set(consecutive)
        self.windows.labels(*labels, str(drifting).lower()).inc()
        for call in per_call:
            for flag in call:
                self.flags.labels(reference.project, flag.reason).inc()
        self.window_seconds.observe(seconds)
