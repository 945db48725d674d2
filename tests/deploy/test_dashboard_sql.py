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
