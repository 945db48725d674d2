"""Prometheus figures of fine-tunes and model versions, read from the store at each scrape: a
run may be recorded by another process (the CLI), so no in-memory counter could know them."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from driftline.finetune import tables
from driftline.finetune.ledger import ModelVersion, read_versions
from driftline.finetune.registry import in_service
from driftline.store import Store

log = logging.getLogger(__name__)

# A run's curves exported per (project, method): its latest run's last value of each.
FIGURES = ("loss", "reward_margin", "reward_accuracy", "kl", "learning_rate", "reward")


class ModelMetrics(Collector):
    """Runs by status, the latest run's progress and figures, versions, the current version and
    each judged version's gate win rate."""

    def __init__(self, store: Store, registry: CollectorRegistry) -> None:
        self.store = store
        registry.register(self)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            yield from self._runs()
            yield from self._versions()
        except Exception as exc:  # a scrape must not fail because the store is busy or down
            log.warning("fine-tune metrics unavailable: %s", exc)

    def _runs(self) -> Iterable[GaugeMetricFamily]:
        runs = GaugeMetricFamily(
            "driftline_finetune_runs",
            "Fine-tune runs by state",
            labels=["project", "method", "status"],
        )
        for r in tables.runs_by_status(self.store):
            runs.add_metric([r["project_id"], r["method"], r["status"]], r["n"])
        yield runs
        step = GaugeMetricFamily(
            "driftline_finetune_step", "The latest run's step", labels=["project", "method"]
        )
        figure = GaugeMetricFamily(
            "driftline_finetune_figure",
            "The latest run's last value of a training figure",
            labels=["project", "method", "name"],
        )
        for r in tables.latest_runs(self.store):
            step.add_metric([r["project_id"], r["method"]], r["step"])
            for f in tables.last_figures(self.store, r["project_id"], r["run"], list(FIGURES)):
                figure.add_metric([r["project_id"], r["method"], f["name"]], f["value"])
        yield step
        yield figure

    def _versions(self) -> Iterable[GaugeMetricFamily]:
        by_project: dict[str, list[ModelVersion]] = defaultdict(list)
        for v in read_versions(self.store, None):
            by_project[v.project].append(v)
        counts = GaugeMetricFamily(
            "driftline_model_versions", "Model versions by status", labels=["project", "status"]
        )
        win = GaugeMetricFamily(
            "driftline_model_gate_win_rate",
            "The eval gate's win rate of each judged version",
            labels=["project", "version"],
        )
        info = GaugeMetricFamily(
            "driftline_model_current_info",
            "The model version in service",
            labels=["project", "version"],
        )
        for project, versions in sorted(by_project.items()):
            for status, n in sorted(Counter(v.status for v in versions).items()):
                counts.add_metric([project, status], n)
            for v in versions:
                if "win_rate" in v.verdict:
                    win.add_metric([project, v.version], v.verdict["win_rate"]["rate"])
            now = in_service(versions)
            if now is not None:
                info.add_metric([project, now.version], 1)
        yield counts
        yield win
        yield info
