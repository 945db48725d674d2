"""Each rule condition as a query: what is active now, per label set, with its evidence."""

from __future__ import annotations

import json
from dataclasses import asdict

from driftline.alerts.rules import (
    DriftCondition,
    ExperimentCondition,
    FeedbackCondition,
    FlagsCondition,
    JudgeCondition,
    MetricCondition,
    ModelCondition,
    Rule,
)
from driftline.alerts.state import Sample
from driftline.alerts.tables import last_jobs
from driftline.detectors.tables import flag_totals, latest_windows, window_tests
from driftline.evaluators.agreement import Bar, judge_trust
from driftline.evaluators.experiments import experiments
from driftline.finetune.tables import versions_changed
from driftline.ingest.tables import experiment_projects, metric_by
from driftline.review.feedback import trusted_sources
from driftline.review.tables import judge_users, new_feedback
from driftline.store import Store

_NS_PER_MS = 1_000_000


def evaluate(store: Store, rule: Rule, now: float) -> list[Sample]:
    """The label sets for which `rule`'s condition holds at `now` (epoch seconds)."""
    condition = rule.when.condition
    now_ns = round(now * 1000) * _NS_PER_MS  # the engine's clock keeps milliseconds
    if isinstance(condition, DriftCondition):
        samples = _drift(store, condition, now_ns)
    elif isinstance(condition, FlagsCondition):
        samples = _flags(store, condition, now_ns)
    elif isinstance(condition, MetricCondition):
        samples = _metric(store, condition, now_ns)
    elif isinstance(condition, ModelCondition):
        samples = _model(store, condition, now_ns)
    elif isinstance(condition, JudgeCondition):
        samples = _judge(store, condition, now_ns)
    elif isinstance(condition, ExperimentCondition):
        samples = _experiment(store, condition, now_ns)
    else:
        samples = _feedback(store, condition, rule.alert, now_ns)
    for sample in samples:
        sample.labels = {**sample.labels, **rule.labels, "alertname": rule.alert}
    return samples


def _drift(store: Store, c: DriftCondition, now_ns: int) -> list[Sample]:
    rows = latest_windows(store, now_ns, c.reference)
    samples = []
    for row in rows:
        if row["consecutive"] < c.consecutive:
            continue
        tests = window_tests(store, row["project_id"], row["window_key"])
        samples.append(
            Sample(
                labels={
                    "project": row["project_id"],
                    "reference": row["reference"],
                    **dict(row["scope"]),
                },
                value=float(row["consecutive"]),
                evidence={
                    "reference_version": row["version"],
                    "window_key": row["window_key"],
                    "consecutive_windows": row["consecutive"],
                    "tests": tests,
                },
            )
        )
    return samples


def _flags(store: Store, c: FlagsCondition, now_ns: int) -> list[Sample]:
    since = now_ns - round(c.over * 1000) * _NS_PER_MS
    rows = flag_totals(store, since, now_ns, c.reason, c.reference)
    samples = []
    for row in rows:
        rate = row["flagged"] / row["calls"] if row["calls"] else 0.0
        active = (
            rate > c.rate_above if c.rate_above is not None else row["flagged"] >= (c.at_least or 0)
        )
        if not active:
            continue
        samples.append(
            Sample(
                labels={
                    "project": row["project_id"],
                    "reference": row["reference"],
                    "reason": c.reason,
                    **dict(row["scope"]),
                },
                value=rate if c.rate_above is not None else float(row["flagged"]),
                evidence={
                    "flagged": row["flagged"],
                    "calls": row["calls"],
                    "rate": rate,
                    "windows": sorted(row["windows"]),
                },
            )
        )
    return samples


def _metric(store: Store, c: MetricCondition, now_ns: int) -> list[Sample]:
    since = now_ns - round(c.over * 1000) * _NS_PER_MS
    rows = metric_by(store, c.metric, c.by, since, now_ns, c.min_calls)
    return [
        Sample(
            labels={"project": row["project_id"], **{d: str(row[d]) for d in c.by}},
            value=float(row["value"]),
            evidence={"metric": c.metric, "calls": row["calls"], "over_seconds": c.over},
        )
        for row in rows
        if c.breached(float(row["value"]))
    ]


def _feedback(store: Store, c: FeedbackCondition, rule: str, now_ns: int) -> list[Sample]:
    """Projects with at least `at_least` trusted feedback rows since this rule last started a
    job."""
    after = {project: ms * _NS_PER_MS for project, ms in last_jobs(store, rule).items()}
    found = new_feedback(store, now_ns, c.names or [], after, trusted_sources(c.app_feedback))
    rows = [row for row in found if row["n"] >= c.at_least]
    return [
        Sample(
            labels={"project": row["project_id"]},
            value=float(row["n"]),
            evidence={"new_feedback": row["n"], "feedback_until_ms": row["last_ns"] // _NS_PER_MS},
        )
        for row in rows
    ]


def _model(store: Store, c: ModelCondition, now_ns: int) -> list[Sample]:
    since = now_ns - round(c.over * 1000) * _NS_PER_MS
    rows = versions_changed(store, c.status, since, now_ns)
    return [
        Sample(
            labels={
                "project": row["project_id"],
                "version": row["version"],
                "method": row["method"] or "registered",
            },
            value=row["win_rate"],
            evidence={
                "path": row["path"],
                "base_version": row["base_version"],
                "win_rate": row["win_rate"],
                "reasons": [json.loads(r) for r in row["reasons"]],
            },
        )
        for row in rows
    ]


def _judge(store: Store, c: JudgeCondition, now_ns: int) -> list[Sample]:
    bar = Bar(c.min_spearman, c.min_audited, c.over / 86400)
    samples = []
    for row in judge_users(store, f"{c.evaluator}@", now_ns - round(c.over * 1e9)):
        trust = judge_trust(store, row["project_id"], row["user_id"], bar, now_ns)
        if trust.trusted is not False:
            continue
        below = [x for x in trust.criteria if x.trusted is False]
        samples.append(
            Sample(
                labels={
                    "project": row["project_id"],
                    "evaluator": c.evaluator,
                    "version": row["user_id"].split("@", 1)[1],
                },
                value=min(x.spearman if x.spearman is not None else -1.0 for x in below),
                evidence={"criteria": [asdict(x) for x in trust.criteria],
                          "min_spearman": c.min_spearman, "min_audited": c.min_audited,
                          "window_key": f"judge:{row['user_id']}"},  # its audits in the queue
            )
        )  # fmt: skip
    return samples


def _experiment(store: Store, c: ExperimentCondition, now_ns: int) -> list[Sample]:
    bar = Bar(c.min_spearman, c.min_audited, c.days)
    since = now_ns - c.days * 86_400 * 10**9
    samples = []
    scoring = judge_users(store, "", since)  # every judge of every project, read once
    for project in experiment_projects(store, since):
        judges = [
            row["user_id"]
            for row in scoring
            if row["project_id"] == project
            and judge_trust(store, project, row["user_id"], bar, now_ns).trusted is True
        ]
        for found in experiments(store, project, c, judges, now_ns, c.checks):
            if c.experiment is not None and found["experiment"] != c.experiment:
                continue
            for candidate in found["candidates"]:
                if candidate["verdict"] != c.verdict:
                    continue
                samples.append(
                    Sample(
                        labels={"project": project, "experiment": found["experiment"],
                                "version": candidate["version"], "baseline": found["baseline"]},
                        value=float(candidate["calls"]),
                        evidence={"verdict": c.verdict, "metrics": candidate["metrics"],
                                  "baseline_calls": found["baseline_calls"]},
                    )
                )  # fmt: skip
    return samples
