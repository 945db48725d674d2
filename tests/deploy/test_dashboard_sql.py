"""Every ClickHouse panel of the shipped dashboards runs on chDB and returns its columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from deploy.grafana import build
from driftline.store import Store
from tests.deploy.macros import expand
from tests.deploy.seed import seed

NOW = datetime.now(UTC).replace(microsecond=0)
ALL = {"project": build.ALL, "service": build.ALL, "model": build.ALL}
ONE = {"project": "alpha", "service": "support-bot", "model": "gpt-4o"}


def shipped_sql() -> list[str]:
    """rawSql of every ClickHouse target and variable in the JSON files."""
    found = []
    for path in sorted(build.OUT.glob("*.json")):
        board = json.loads(Path(path).read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "grafana-clickhouse-datasource":
                    found.append(target["rawSql"])
    return found


def test_every_shipped_panel_is_checked_here() -> None:
    assert sorted(shipped_sql()) == sorted(q.sql for q in build.queries())
    assert len(shipped_sql()) >= 30


@pytest.fixture
def seeded(store: Store) -> Store:
    seed(store, calls=3000, days=30, now=NOW)
    return store


def run(store: Store, sql: str, variables: dict[str, str], days: int = 7) -> pa.Table:
    start = NOW - timedelta(days=days)
    return store.query_arrow(expand(sql, start, NOW, days * 86400 // 500, variables))


def column_types(store: Store, sql: str) -> dict[str, str]:
    """ClickHouse's own types of a query's result (Arrow shows DateTime as an integer)."""
    sql = expand(sql, NOW - timedelta(days=1), NOW, 60, ALL)
    return {r["name"]: r["type"] for r in store.query(f"DESCRIBE ({sql})")}


def _plottable(kind: str) -> bool:
    """A time, a number, or a label Grafana turns into a series (long to wide)."""
    kind = kind.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return kind.startswith(("DateTime", "String", "UInt", "Int", "Float", "Decimal"))


def test_panels_return_their_columns_over_seeded_data(seeded: Store) -> None:
    for query in build.queries():
        result = run(seeded, query.sql, ALL)
        assert tuple(result.column_names) == query.columns, query.sql
        assert result.num_rows > 0, f"no rows for: {query.sql}"
        if query.fmt == build.TIMESERIES:
            types = column_types(seeded, query.sql)
            assert types["time"].startswith("DateTime"), query.sql
            assert all(_plottable(t) for t in types.values()), (types, query.sql)
        for column in query.columns:
            if column == "trace_id":
                assert all(len(t) == 32 for t in result.column("trace_id").to_pylist())


def test_variables_narrow_the_results(seeded: Store) -> None:
    calls = next(q for q in build.queries() if q.columns == ("calls",))
    everything = run(seeded, calls.sql, ALL).column("calls")[0].as_py()
    one = run(seeded, calls.sql, ONE).column("calls")[0].as_py()
    assert 0 < one < everything / 4
    for query in build.queries():
        run(seeded, query.sql, ONE)  # a concrete selection is valid SQL for every panel


def test_time_picker_bounds_the_rows(seeded: Store) -> None:
    calls = next(q for q in build.queries() if q.columns == ("calls",))
    day = run(seeded, calls.sql, ALL, days=1).column("calls")[0].as_py()
    week = run(seeded, calls.sql, ALL, days=7).column("calls")[0].as_py()
    assert day == pytest.approx(3000 / 30, abs=2) and week == pytest.approx(3000 * 7 / 30, abs=2)


def test_variable_queries_list_values(seeded: Store) -> None:
    board = json.loads((build.OUT / "overview.json").read_text())
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            values = run(seeded, variable["query"], {**ALL, "project": "alpha"})
            assert values.num_rows > 0, variable["name"]


# What each panel moved to the hourly rollup showed when it read llm_calls, bucketed the way the
# rollup buckets (by hour at the finest); the rollup's panels must show the same figures.
_ERR = "countIf(status_code = 'error' OR error_type != '')"
_Q = "quantilesTDigest(0.5, 0.95, 0.99)(duration_ms)"
_T = "$__timeInterval(start_time) AS time"
_BY = f"FROM llm_calls WHERE {build.CALLS} GROUP BY time"
FROM_CALLS = {
    ("overview", "Error rate"): f"SELECT {_ERR} / greatest(count(), 1) FROM llm_calls "
    f"WHERE {build.CALLS}",
    ("overview", "Cost"): f"SELECT sum(cost_usd) FROM llm_calls WHERE {build.CALLS}",
    ("overview", "Calls by model"): f"SELECT {_T}, response_model, count() {_BY}, 2",
    ("overview", "Latency p50 / p95 / p99"): f"SELECT {_T}, {_Q}[1], {_Q}[2], {_Q}[3] {_BY}",
    ("overview", "Error rate by service"): f"SELECT {_T}, service, {_ERR} / count() {_BY}, 2",
    ("overview", "Tokens by model"): f"SELECT {_T}, response_model, sum(input_tokens), "
    f"sum(output_tokens) {_BY}, 2",
    ("overview", "Cost by model"): f"SELECT {_T}, response_model, sum(cost_usd) {_BY}, 2",
    ("overview", "By service, model and agent"): "SELECT service, response_model, agent_name, "
    f"count() AS calls, {_Q}[2], {_ERR}, sum(total_tokens), sum(cost_usd) FROM llm_calls "
    f"WHERE {build.CALLS} GROUP BY 1, 2, 3 ORDER BY calls DESC LIMIT 100",
    ("drift", "Calls by service version"): f"SELECT {_T}, concat(service, ' ', "
    f"service_version), count() {_BY}, 2",
}


def shipped_panels() -> dict[tuple[str, str], str]:
    """(dashboard, panel title) → rawSql of the shipped ClickHouse panels."""
    return {
        (path.stem, panel["title"]): target["rawSql"]
        for path in sorted(build.OUT.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel.get("targets", [])
        if "rawSql" in target
    }


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    rows = [tuple(row.values()) for row in table.to_pylist()]
    return sorted(rows, key=lambda row: tuple(str(v) for v in row))


def _same(rollup: list[tuple[object, ...]], direct: list[tuple[object, ...]], rel: float) -> None:
    assert len(rollup) == len(direct) > 0
    for ours, theirs in zip(rollup, direct, strict=True):
        assert len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            if isinstance(b, float):
                assert a == pytest.approx(b, rel=rel), (ours, theirs)
            else:
                assert a == b, (ours, theirs)


@pytest.fixture
def dense(store: Store) -> Store:
    seed(store, calls=20_000, days=7, now=NOW)
    return store


def test_rollup_panels_equal_the_same_aggregates_of_llm_calls(dense: Store) -> None:
    panels = shipped_panels()
    moved = {key for key, sql in panels.items() if "llm_calls_hourly" in sql}
    assert moved == set(FROM_CALLS)
    assert dense.query("SELECT count() AS n FROM llm_calls_hourly")[0]["n"] > 0
    # NOW is not on the hour, so every range has partial hours at both ends; 40 minutes holds
    # no whole hour at all.
    for span, step in ((timedelta(days=7), 3600), (timedelta(hours=5), 3600),
                       (timedelta(minutes=40), 60), (timedelta(days=6), 7200)):  # fmt: skip
        for variables in (ALL, ONE):
            for key in sorted(moved):
                ours = _rows(
                    dense.query_arrow(expand(panels[key], NOW - span, NOW, step, variables))
                )
                # A series from the rollup is hourly at the finest, whatever Grafana asks for.
                direct_step = max(step, 3600)
                theirs = _rows(
                    dense.query_arrow(
                        expand(FROM_CALLS[key], NOW - span, NOW, direct_step, variables)
                    )
                )
                # Float sums in another order differ in the last bits; t-digests merged from
                # hourly digests differ slightly from one digest over the same calls.
                _same(ours, theirs, 0.02 if "quantilesTDigestMerge" in panels[key] else 1e-9)
