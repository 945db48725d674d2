"""Live A/B of model versions: the versions an app splits its traffic between
(`sdk.choose_version`), compared on the same days of live traffic with the sequential test
(sequential.py). The version with the most calls is the baseline; each other is a candidate.
Metrics: error rate, latency and cost per call, the share of calls the detectors flagged (per
reason), each criterion of the online judges people trust (an untrusted judge's scores are left
out), the built-in evaluators' scores (relevance, refusals, empty and invalid-JSON answers) and
the apps' thumbs; and, where people chose between the two versions' answers side by side, the
candidate's win rate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from driftline.detectors.tables import flag_counts
from driftline.evaluators.config import ExperimentSettings
from driftline.evaluators.sequential import Better, Pairs, Sample, compare, decide, win_rate
from driftline.ingest.tables import experiment_call_stats, experiment_traces
from driftline.review.feedback import FROM_APPS, REVIEWED
from driftline.review.tables import pairwise_choices, score_stats
from driftline.store import Store

# Built-in checks store 1 when the answer has the problem; relevance and judges' criteria are
# better higher. The apps' thumbs (a bool, as sdk.feedback sends it) count beside them.
LOWER_IS_BETTER = frozenset({"refusal", "empty", "json"})
THUMBS = ("thumbs",)
FLAGS = "flags:"  # the detectors' flag rates: guards, which can make a candidate lose, not win
_CALL_METRICS: tuple[tuple[str, str], ...] = (
    ("error_rate", "error"), ("latency_ms", "latency"), ("cost_usd", "cost"),
)  # fmt: skip


def experiments(
    store: Store,
    project: str,
    settings: ExperimentSettings,
    judges: Sequence[str],
    now_ns: int,
    checks: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Every experiment of the project's traffic in the last `days`, each candidate against
    the baseline with a verdict: `wins`, `loses` or None (not yet). `judges`: the online judges
    people trust (NAME@VERSION); `checks`: the built-in evaluators (their users), whose scores
    need no trust; the apps' thumbs count too."""
    since = now_ns - settings.days * 86_400 * 10**9
    samples: dict[str, dict[str, dict[str, tuple[Sample, Better]]]] = {}
    calls: dict[str, dict[str, int]] = {}
    for row in experiment_call_stats(store, project, since):
        versions = samples.setdefault(row["experiment"], {})
        calls.setdefault(row["experiment"], {})[row["version"]] = row["calls"]
        versions[row["version"]] = {
            metric: (_sample(row["calls"], row[f"{col}_mean"], row[f"{col}_var"]), "lower")
            for metric, col in _CALL_METRICS
        }
    traces = experiment_traces(project, since)
    _add_flags(samples, calls, flag_counts(store, project, traces, since))
    scored = [
        *(("judge", row) for row in score_stats(store, project, traces, "judge", judges)),
        *(("check", row) for row in score_stats(store, project, traces, "judge", checks)),
        *((f"app_{source}", row) for source in FROM_APPS
          for row in score_stats(store, project, traces, source, names=THUMBS)),
    ]  # fmt: skip
    for kind, row in scored:
        metrics = samples.get(row["experiment"], {}).get(row["version"])
        if metrics is not None:
            better: Better = "lower" if row["name"] in LOWER_IS_BETTER else "higher"
            sample = _sample(row["n"], row["mean"], row["var"])
            metrics[f"{kind}:{row['name']}"] = (sample, better)
    choices = pairwise_choices(store, project, traces, REVIEWED + FROM_APPS)
    return [
        _experiment(name, versions, calls[name], _pairs(choices, name), settings)
        for name, versions in sorted(samples.items())
    ]


def _add_flags(
    samples: dict[str, dict[str, dict[str, tuple[Sample, Better]]]],
    calls: dict[str, dict[str, int]],
    flagged: list[dict[str, Any]],
) -> None:
    """Each reason a detector flagged calls of an experiment for, as a share of each version's
    calls (0 where it flagged none of a version's)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in flagged:
        counts.setdefault((row["experiment"], row["reason"]), {})[row["version"]] = row["flagged"]
    for (experiment, reason), by_version in counts.items():
        for version, metrics in samples.get(experiment, {}).items():
            n, k = calls[experiment][version], by_version.get(version, 0)
            share = k / n if n else 0.0
            variance = max(share * (1 - share) * n / (n - 1), 0.0) if n > 1 else 0.0
            metrics[f"{FLAGS}{reason}"] = (Sample(n, share, variance), "lower")


def _pairs(choices: list[dict[str, Any]], experiment: str) -> dict[tuple[str, str], Pairs]:
    """Per (winner-side version, other version) of the experiment: the choices between them, as
    wins, losses and ties of the first."""
    tally: dict[tuple[str, str], list[int]] = {}
    for row in choices:
        if row["experiment"] != experiment:
            continue
        a, b, n = row["version_a"], row["version_b"], row["n"]
        for first, second, won in ((a, b, "a"), (b, a, "b")):
            counts = tally.setdefault((first, second), [0, 0, 0])
            outcome = 2 if row["choice"] == "tie" else 0 if row["choice"] == won else 1
            counts[outcome] += n
    return {pair: Pairs(*counts) for pair, counts in tally.items()}


def _finite(value: float) -> float | None:
    """None for a share of a baseline of 0 (JSON has no infinity)."""
    return value if math.isfinite(value) else None


def _sample(n: int, mean: float | None, variance: float | None) -> Sample:
    return Sample(int(n), float(mean or 0.0), float(variance or 0.0))


def _experiment(
    name: str,
    versions: dict[str, dict[str, tuple[Sample, Better]]],
    calls: dict[str, int],
    pairs: dict[tuple[str, str], Pairs],
    settings: ExperimentSettings,
) -> dict[str, Any]:
    baseline = max(sorted(versions), key=lambda v: calls[v])
    candidates = []
    for version in sorted(versions):
        if version == baseline:
            continue
        shared = sorted(set(versions[baseline]) & set(versions[version]))
        judged = pairs.get((version, baseline), Pairs(0, 0, 0))
        alpha = settings.alpha / max(len(shared) + (judged.n > 0), 1)  # every metric at once
        found = {
            metric: compare(metric, versions[baseline][metric][0], versions[version][metric][0],
                            alpha, settings.min_effect, versions[baseline][metric][1])
            for metric in shared
        }  # fmt: skip
        verdict = decide(
            [c for m, c in found.items() if not m.startswith(FLAGS)], settings.max_drop,
            win_rate(judged, alpha, settings.min_win_rate), settings.min_win_rate,
            judged_pairwise=judged.n > 0,
            guards=[c for m, c in found.items() if m.startswith(FLAGS)],
        )  # fmt: skip
        candidates.append(
            {
                "version": version,
                "calls": calls[version],
                "verdict": verdict.outcome,
                "pairwise": {"wins": judged.wins, "losses": judged.losses, "ties": judged.ties},
                "metrics": [
                    {
                        "metric": c.metric, "better": c.better,
                        "baseline_mean": c.baseline_mean,
                        "candidate_mean": c.baseline_mean + c.difference,
                        "difference": c.difference, "low": c.low, "high": c.high,
                        "relative": _finite(c.relative(c.difference)), "worse": c.worse,
                    }
                    for c in verdict.comparisons
                ],
            }
        )  # fmt: skip
    return {"experiment": name, "baseline": baseline, "baseline_calls": calls[baseline],
            "candidates": candidates}  # fmt: skip
