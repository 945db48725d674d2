"""The overview page's figures: drift p-values and flag rates per window, the review backlog,
call latency, errors and tokens per hour (later rooms add their own charts)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from driftline.detectors.tables import flag_rates, queued, window_effects
from driftline.ingest.tables import hourly_by_model
from driftline.review.charts import Point, line_chart
from driftline.review.tables import review_counts
from driftline.store import Store
from driftline.store.sql import bind


def charts(store: Store, project: str, days: int, per_item: int) -> list[str]:
    params = {"p": project, "days": days, "k": per_item}
    smallest_p, effects = _window_tests(store, params)
    return [
        line_chart("Drift: smallest p-value per window (log scale)", smallest_p, True),
        line_chart("Drift: each test's effect size per window", effects),
        line_chart("Flagged share of each window", _flag_rate(store, params)),
        line_chart(
            "Review backlog: queued calls still short of reviews, per day", _backlog(store, params)
        ),
        *_calls(store, params),
    ]


def series(rows: list[dict[str, Any]], name: str, value: str) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = defaultdict(list)
    for row in rows:
        out[str(row[name])].append((row["t"], float(row[value])))
    return dict(out)


def _window_tests(
    store: Store, params: dict[str, Any]
) -> tuple[dict[str, list[Point]], dict[str, list[Point]]]:
    """Per reference, each window's smallest p-value; per reference and test, its effect size."""
    rows = window_effects(store, params["p"], params["days"])
    smallest: dict[tuple[str, float], float] = {}
    for row in rows:
        key = (row["reference"], row["t"])
        smallest[key] = min(smallest.get(key, 1.0), row["p"])
    p_values: dict[str, list[Point]] = defaultdict(list)
    for (reference, t), p in smallest.items():
        p_values[reference].append((t, p))
    return dict(p_values), series(rows, "test", "effect")


def _flag_rate(store: Store, params: dict[str, Any]) -> dict[str, list[Point]]:
    return series(flag_rates(store, params["p"], params["days"]), "reference", "rate")


def _backlog(store: Store, params: dict[str, Any]) -> dict[str, list[Point]]:
    queue, reviews = queued(params["p"]), review_counts(params["p"], "")
    rows = store.query(
        "SELECT toUnixTimestamp(toStartOfDay(q.enqueued_at)) AS t, "
        "countIf(ifNull(r.reviews, 0) < {k:UInt32}) AS backlog, count() AS queued "
        f"FROM {queue} AS q LEFT JOIN {reviews} AS r "
        "ON r.trace_id = toString(q.trace_id) AND r.span_id = toString(q.span_id) "
        "WHERE q.enqueued_at > now() - toIntervalDay({days:UInt32}) GROUP BY t ORDER BY t",
        bind(queue, reviews, {"k": params["k"], "days": params["days"]}),
    )
    return {
        "short of reviews": [(r["t"], float(r["backlog"])) for r in rows],
        "queued": [(r["t"], float(r["queued"])) for r in rows],
    }


def _calls(store: Store, params: dict[str, Any]) -> list[str]:
    rows = hourly_by_model(store, params["p"], params["days"])
    return [
        line_chart("Calls per hour, by model", series(rows, "model", "calls")),
        line_chart("p95 latency per hour", series(rows, "model", "p95"), unit=" ms"),
        line_chart("Error rate per hour", series(rows, "model", "errors")),
        line_chart("Tokens per hour", series(rows, "model", "tokens")),
    ]
