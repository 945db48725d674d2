"""Generate driftline's Grafana dashboards (deploy/grafana/dashboards/*.json) from typed code."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    DynamicConfigValue,
    VariableRefresh,
    VariableSort,
)

OUT = Path(__file__).resolve().parent / "dashboards"
CLICKHOUSE = DataSourceRef(type_val="grafana-clickhouse-datasource", uid="driftline-clickhouse")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="driftline-prometheus")
# One "All" value both languages read: a PromQL regex, and a sentinel the SQL filters test for.
ALL = ".*"
TIMESERIES, TABLE = 0, 1  # the ClickHouse plugin's `format` for each result shape

# Filters every panel shares; `$__timeFilter` follows the time picker.
PROJECT = f"('$project' = '{ALL}' OR project_id = '$project')"
SERVICE = f"('$service' = '{ALL}' OR service = '$service')"
MODEL = f"('$model' = '{ALL}' OR response_model = '$model')"
CALLS = f"$__timeFilter(start_time) AND {PROJECT} AND {SERVICE} AND {MODEL}"
SCOPE = (
    f"{PROJECT} AND ('$service' = '{ALL}' OR scope['service'] = '$service') "
    f"AND ('$model' = '{ALL}' OR scope['model'] = '$model')"
)
PROM = 'project=~"$project"'

# Aggregates over many calls read the hourly rollup (migration 7, `llm_calls_hourly`): the whole
# hours inside the range come from its states, the partial hours at either end from llm_calls,
# aggregated the same way, so the figures equal llm_calls' own (quantiles are t-digests). Series
# bucket by hour at the finest; `$__timeInterval(hour)` of an hour is that hour.
_FIRST_HOUR = "toStartOfHour($__fromTime + 3599, 'UTC')"
_LAST_HOUR = "toStartOfHour($__toTime, 'UTC')"
_ROLLUP_KEYS = "project_id, hour, service, service_version, model, agent"
_STATES = "calls, errors, input_tokens, output_tokens, total_tokens, cost, duration"
HOURLY = (
    f"(SELECT {_ROLLUP_KEYS}, {_STATES} FROM llm_calls_hourly WHERE $__timeFilter(hour) "
    f"AND hour < {_LAST_HOUR} AND {PROJECT} AND {SERVICE} "
    f"AND ('$model' = '{ALL}' OR model = '$model') "
    "UNION ALL SELECT project_id, toStartOfHour(start_time, 'UTC') AS hour, service, "
    "service_version, response_model AS model, agent_name AS agent, countState() AS calls, "
    "countIfState(toUInt8(status_code = 'error' OR error_type != '')) AS errors, "
    "sumState(input_tokens) AS input_tokens, sumState(output_tokens) AS output_tokens, "
    "sumState(total_tokens) AS total_tokens, sumState(cost_usd) AS cost, "
    "quantilesTDigestState(0.5, 0.95, 0.99)(duration_ms) AS duration "
    f"FROM llm_calls WHERE {CALLS} AND (start_time < {_FIRST_HOUR} OR start_time >= {_LAST_HOUR}) "
    f"GROUP BY {_ROLLUP_KEYS})"
)
QUANTILES = "quantilesTDigestMerge(0.5, 0.95, 0.99)(duration)"
ERRORS = "countIfMerge(errors)"
PROM_CALLS = 'project=~"$project", service=~"$service", model=~"$model"'


Panel = timeseries.Panel | table.Panel | stat.Panel


class ClickHouseQuery(cogvariants.Dataquery):
    """A grafana-clickhouse-datasource SQL target (the SDK ships no model for this plugin)."""

    def __init__(self, sql: str, fmt: int, ref_id: str = "A") -> None:
        self.sql, self.fmt, self.ref_id = sql, fmt, ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": CLICKHOUSE.to_json(),
            "editorType": "sql",
            "format": self.fmt,
            "queryType": "timeseries" if self.fmt == TIMESERIES else "table",
            "rawSql": self.sql,
            "refId": self.ref_id,
        }


class SQL(Builder[ClickHouseQuery]):
    def __init__(self, sql: str, fmt: int) -> None:
        self._query = ClickHouseQuery(sql, fmt)

    def build(self) -> ClickHouseQuery:
        return self._query


@dataclass(frozen=True)
class Query:
    """A ClickHouse panel's SQL and the columns it must return (checked on chDB by the tests)."""

    sql: str
    columns: tuple[str, ...]
    fmt: int = TIMESERIES


@dataclass
class Board:
    uid: str
    title: str
    description: str
    builder: dash.Dashboard = field(init=False)
    queries: list[Query] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.builder = (
            dash.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(["driftline"])
            .time("now-24h", "now")
            .timezone("utc")
            .refresh("1m")
            .editable()
        )
        for variable in _variables():
            self.builder.with_variable(variable)
        for other_uid, other_title in DASHBOARDS:
            if other_uid != self.uid:
                self.builder.link(
                    dash.DashboardLink(other_title)
                    .type(DashboardLinkType.LINK)
                    .url(f"/d/{other_uid}")
                    .keep_time(True)
                    .include_vars(True)
                )

    def sql_panel(self, panel: Panel, query: Query, width: int = 12, height: int = 8) -> None:
        self.queries.append(query)
        self.builder.with_panel(
            panel.datasource(CLICKHOUSE)
            .with_target(SQL(query.sql, query.fmt))
            .span(width)
            .height(height)
        )

    def prom_panel(self, panel: Panel, exprs: dict[str, str], width: int = 12) -> None:
        for ref, (legend, expr) in zip("ABCDEFGH", exprs.items(), strict=False):
            panel.with_target(
                prometheus.Dataquery()
                .expr(expr)
                .legend_format(legend)
                .range()
                .ref_id(ref)
                .datasource(PROMETHEUS)
            )
        self.builder.with_panel(panel.datasource(PROMETHEUS).span(width).height(8))


DASHBOARDS = (
    ("driftline-overview", "driftline · Overview"),
    ("driftline-drift", "driftline · Drift"),
    ("driftline-review", "driftline · Review"),
    ("driftline-alerts", "driftline · Alerts and retraining"),
)


def _variables() -> list[Builder]:
    def variable(name: str, sql: str) -> Builder:
        return (
            dash.QueryVariable(name)
            .label(name)
            .datasource(CLICKHOUSE)
            .query(sql)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            .all_value(ALL)
        )

    recent = "$__timeFilter(start_time)"
    return [
        variable("project", f"SELECT DISTINCT project_id FROM llm_calls WHERE {recent}"),
        variable("service", f"SELECT DISTINCT service FROM llm_calls WHERE {recent} AND {PROJECT}"),
        variable(
            "model",
            f"SELECT DISTINCT response_model FROM llm_calls WHERE {recent} AND {PROJECT} "
            f"AND {SERVICE}",
        ),
        dash.TextBoxVariable("driftline_url")
        .label("driftline URL")
        .default_value("http://localhost:4318"),
    ]


def _ts(title: str) -> timeseries.Panel:
    legend = (
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    return timeseries.Panel().title(title).legend(legend)


def _hourly(panel: timeseries.Panel) -> timeseries.Panel:
    """A series from the hourly rollup: Grafana's minimum interval is its bucket."""
    return panel.interval("1h")


def _table(title: str) -> table.Panel:
    return table.Panel().title(title).show_header(True)


def _stat(title: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def _trace_links(panel: table.Panel) -> table.Panel:
    """Open the call in its trace in driftline's explorer (the waterfall, the conversation,
    feedback, flags and, if queued, its review item)."""
    link = {
        "title": "Open the trace in driftline",
        "url": "${driftline_url}/review/traces/${__data.fields.trace_id}"
        "#span-${__data.fields.span_id}",
        "targetBlank": True,
    }
    return panel.override_by_name("trace_id", [DynamicConfigValue("links", [link])])


def overview() -> Board:
    b = Board(DASHBOARDS[0][0], DASHBOARDS[0][1], "LLM calls: volume, latency, errors, cost")
    b.sql_panel(
        _stat("Calls"),
        Query(f"SELECT count() AS calls FROM llm_calls WHERE {CALLS}", ("calls",), TABLE),
        width=6,
        height=4,
    )
    b.sql_panel(
        _stat("Error rate").unit("percentunit"),
        Query(
            f"SELECT {ERRORS} / greatest(countMerge(calls), 1) AS error_rate FROM {HOURLY}",
            ("error_rate",),
            TABLE,
        ),
        width=6,
        height=4,
    )
    b.sql_panel(
        _stat("p95 latency").unit("ms"),
        Query(
            # Merging a week of hourly t-digests (36,000 states) is slower than sampling the
            # week's calls: measured 171 vs 107 ms at 10 M calls (docs/benchmarks.md).
            f"SELECT quantile(0.95)(duration_ms) AS p95_ms FROM llm_calls WHERE {CALLS}",
            ("p95_ms",),
            TABLE,
        ),
        width=6,
        height=4,
    )
    b.sql_panel(
        _stat("Cost").unit("currencyUSD"),
        Query(f"SELECT sumMerge(cost) AS cost_usd FROM {HOURLY}", ("cost_usd",), TABLE),
        width=6,
        height=4,
    )
    per_interval = f"FROM {HOURLY} GROUP BY time"
    b.sql_panel(
        _hourly(_ts("Calls by model")),
        Query(
            "SELECT $__timeInterval(hour) AS time, model, countMerge(calls) AS calls "
            f"{per_interval}, model ORDER BY time",
            ("time", "model", "calls"),
        ),
    )
    b.sql_panel(
        _hourly(_ts("Latency p50 / p95 / p99").unit("ms")),
        Query(
            f"SELECT $__timeInterval(hour) AS time, {QUANTILES}[1] AS p50, "
            f"{QUANTILES}[2] AS p95, {QUANTILES}[3] AS p99 {per_interval} ORDER BY time",
            ("time", "p50", "p95", "p99"),
        ),
    )
    b.sql_panel(
        _hourly(_ts("Error rate by service").unit("percentunit")),
        Query(
            f"SELECT $__timeInterval(hour) AS time, service, {ERRORS} / countMerge(calls) "
            f"AS error_rate {per_interval}, service ORDER BY time",
            ("time", "service", "error_rate"),
        ),
    )
    b.sql_panel(
        _hourly(_ts("Tokens by model")),
        Query(
            "SELECT $__timeInterval(hour) AS time, model, sumMerge(input_tokens) AS input, "
            f"sumMerge(output_tokens) AS output {per_interval}, model ORDER BY time",
            ("time", "model", "input", "output"),
        ),
    )
    b.sql_panel(
        _hourly(_ts("Cost by model").unit("currencyUSD")),
        Query(
            "SELECT $__timeInterval(hour) AS time, model, sumMerge(cost) AS cost_usd "
            f"{per_interval}, model ORDER BY time",
            ("time", "model", "cost_usd"),
        ),
    )
    b.sql_panel(
        _table("By service, model and agent"),
        Query(
            f"SELECT service, model, agent, countMerge(calls) AS calls, {QUANTILES}[2] AS p95_ms, "
            f"{ERRORS} AS errors, sumMerge(total_tokens) AS tokens, sumMerge(cost) AS cost_usd "
            f"FROM {HOURLY} GROUP BY service, model, agent ORDER BY calls DESC LIMIT 100",
            ("service", "model", "agent", "calls", "p95_ms", "errors", "tokens", "cost_usd"),
            TABLE,
        ),
    )
    b.sql_panel(
        _trace_links(_table("Slowest calls")),
        Query(
            "SELECT trace_id, span_id, start_time, service, response_model AS model, "
            f"duration_ms FROM llm_calls WHERE {CALLS} ORDER BY duration_ms DESC LIMIT 20",
            ("trace_id", "span_id", "start_time", "service", "model", "duration_ms"),
            TABLE,
        ),
    )
    b.sql_panel(
        _trace_links(_table("Latest failed calls")),
        Query(
            "SELECT trace_id, span_id, start_time, service, response_model AS model, "
            f"error_type, status_message FROM llm_calls WHERE {CALLS} "
            "AND (status_code = 'error' OR error_type != '') ORDER BY start_time DESC LIMIT 20",
            (
                "trace_id",
                "span_id",
                "start_time",
                "service",
                "model",
                "error_type",
                "status_message",
            ),
            TABLE,
        ),
        width=24,
    )
    b.prom_panel(
        _ts("Ingest (Prometheus)").unit("reqps"),
        {
            "spans accepted/s": "sum(rate(driftline_ingest_spans_accepted_total[5m]))",
            "spans rejected/s": "sum(rate(driftline_ingest_spans_rejected_total[5m]))",
            "rows written/s": "sum by (table) (rate(driftline_store_rows_written_total[5m]))",
        },
    )
    b.prom_panel(
        _ts("Collector health (Prometheus)"),
        {
            "WAL backlog bytes": "max(driftline_wal_backlog_bytes)",
            "ack p99 s": "histogram_quantile(0.99, sum by (le) "
            "(rate(driftline_ingest_ack_duration_seconds_bucket[5m])))",
            "LLM p95 s": "histogram_quantile(0.95, sum by (le) "
            f"(rate(driftline_llm_request_duration_seconds_bucket{{{PROM_CALLS}}}[5m])))",
        },
    )
    return b


def drift() -> Board:
    b = Board(DASHBOARDS[1][0], DASHBOARDS[1][1], "Drift tests per window, flags, references")
    findings = f"FROM findings WHERE $__timeFilter(window_end) AND {SCOPE} GROUP BY time, test"
    for title, column, unit in (
        ("p-value by test", "min(p_value)", "none"),
        ("Statistic by test", "avg(statistic)", "none"),
        ("Effect size by test", "avg(effect_size)", "none"),
    ):
        b.sql_panel(
            _ts(title).unit(unit),
            Query(
                f"SELECT $__timeInterval(window_end) AS time, detector AS test, {column} AS value "
                f"{findings} ORDER BY time",
                ("time", "test", "value"),
            ),
            width=8,
        )
    runs = f"FROM detector_runs WHERE $__timeFilter(window_end) AND {SCOPE}"
    b.sql_panel(
        _ts("Drifting windows by reference").unit("percentunit"),
        Query(
            "SELECT $__timeInterval(window_end) AS time, reference, "
            f"avg(drifting) AS drifting_share {runs} GROUP BY time, reference ORDER BY time",
            ("time", "reference", "drifting_share"),
        ),
    )
    b.sql_panel(
        _ts("Flags by reason"),
        Query(
            "SELECT $__timeInterval(window_end) AS time, reason, sum(n) AS flags "
            "FROM detector_runs ARRAY JOIN mapKeys(flag_counts) AS reason, "
            f"mapValues(flag_counts) AS n WHERE $__timeFilter(window_end) AND {SCOPE} "
            "GROUP BY time, reason ORDER BY time",
            ("time", "reason", "flags"),
        ),
    )
    b.sql_panel(
        _table("References in use"),
        Query(
            "SELECT reference, max(reference_version) AS version, "
            "any(scope['service']) AS service, any(scope['model']) AS model, "
            "count() AS windows, sum(drifting) AS drifting_windows, "
            "argMax(consecutive, window_end) AS consecutive_now, "
            "max(window_end) AS last_window, sum(n_current) AS calls_tested "
            f"{runs} GROUP BY reference ORDER BY last_window DESC",
            (
                "reference",
                "version",
                "service",
                "model",
                "windows",
                "drifting_windows",
                "consecutive_now",
                "last_window",
                "calls_tested",
            ),
            TABLE,
        ),
    )
    b.sql_panel(
        _hourly(_ts("Calls by service version")),
        Query(
            "SELECT $__timeInterval(hour) AS time, concat(service, ' ', service_version) "
            f"AS version, countMerge(calls) AS calls FROM {HOURLY} GROUP BY time, version "
            "ORDER BY time",
            ("time", "version", "calls"),
        ),
    )
    b.prom_panel(
        _ts("Latest window (Prometheus)"),
        {
            "{{reference}} {{test}} p": f"driftline_drift_p_value{{{PROM}}}",
            "{{reference}} consecutive": f"driftline_drift_consecutive_windows{{{PROM}}}",
        },
    )
    b.prom_panel(
        _ts("Flags per second (Prometheus)"),
        {"{{reason}}": f"sum by (reason) (rate(driftline_flags_total{{{PROM}}}[5m]))"},
    )
    return b


def review() -> Board:
    b = Board(DASHBOARDS[2][0], DASHBOARDS[2][1], "Review backlog, throughput, agreement, scores")
    queue = f"FROM review_queue WHERE $__timeFilter(call_time) AND {SCOPE}"
    b.sql_panel(
        _stat("Backlog (queued, not yet reviewed)"),
        Query(
            f"SELECT count() AS backlog {queue} AND (toString(trace_id), toString(span_id)) "
            "NOT IN (SELECT trace_id, span_id FROM feedback WHERE source = 'review' "
            # A review comes after its call: older feedback cannot be about calls in range.
            "AND created_at >= $__fromTime)",
            ("backlog",),
            TABLE,
        ),
        width=8,
        height=4,
    )
    reviews = f"FROM feedback WHERE source = 'review' AND $__timeFilter(created_at) AND {PROJECT}"
    b.sql_panel(
        _stat("Reviews submitted"),
        Query(f"SELECT uniqExact(review_id) AS reviews {reviews}", ("reviews",), TABLE),
        width=8,
        height=4,
    )
    b.sql_panel(
        _stat("Reviewers"),
        Query(f"SELECT uniqExact(user_id) AS reviewers {reviews}", ("reviewers",), TABLE),
        width=8,
        height=4,
    )
    b.sql_panel(
        _ts("Queued by reason"),
        Query(
            "SELECT $__timeInterval(call_time) AS time, reason, count() AS queued "
            f"FROM review_queue ARRAY JOIN reasons AS reason WHERE $__timeFilter(call_time) "
            f"AND {SCOPE} GROUP BY time, reason ORDER BY time",
            ("time", "reason", "queued"),
        ),
    )
    b.sql_panel(
        _ts("Throughput: reviews per interval"),
        Query(
            "SELECT $__timeInterval(created_at) AS time, uniqExact(review_id) AS reviews "
            f"{reviews} GROUP BY time ORDER BY time",
            ("time", "reviews"),
        ),
    )
    b.sql_panel(
        _table("Agreement per criterion (calls scored by two or more reviewers)"),
        Query(
            "SELECT name AS criterion, count() AS calls, avg(spread = 0) AS exact, "
            "avg(spread <= 1) AS within_one, avg(spread) AS mean_spread FROM ("
            "SELECT name, cityHash64(trace_id, span_id) AS call, "
            f"max(value_number) - min(value_number) AS spread {reviews} AND kind = 'numeric' "
            "AND value_number IS NOT NULL GROUP BY name, call HAVING min(user_id) != max(user_id)) "
            "GROUP BY criterion ORDER BY criterion",
            ("criterion", "calls", "exact", "within_one", "mean_spread"),
            TABLE,
        ),
    )
    b.sql_panel(
        _ts("Mean score by criterion"),
        Query(
            "SELECT $__timeInterval(created_at) AS time, name AS criterion, "
            f"avg(value_number) AS score {reviews} AND kind = 'numeric' "
            "GROUP BY time, criterion ORDER BY time",
            ("time", "criterion", "score"),
        ),
    )
    b.sql_panel(
        _ts("App feedback: share positive").unit("percentunit"),
        Query(
            "SELECT $__timeInterval(created_at) AS time, name, avg(value_number) AS positive "
            f"FROM feedback WHERE source != 'review' AND kind = 'boolean' "
            f"AND $__timeFilter(created_at) AND {PROJECT} GROUP BY time, name ORDER BY time",
            ("time", "name", "positive"),
        ),
    )
    b.sql_panel(
        _table("Reviewers"),
        Query(
            "SELECT reviewer, countIf(status = 'skipped') AS skipped, "
            "countIf(status = 'draft') AS drafts, max(updated_at) AS last_seen "
            f"FROM review_marks FINAL WHERE $__timeFilter(updated_at) AND {PROJECT} "
            "GROUP BY reviewer ORDER BY last_seen DESC",
            ("reviewer", "skipped", "drafts", "last_seen"),
            TABLE,
        ),
        width=24,
    )
    return b


def alerts() -> Board:
    b = Board(DASHBOARDS[3][0], DASHBOARDS[3][1], "Alerts, notifications, retraining, models")
    b.sql_panel(
        _table("Active alerts"),
        Query(
            "SELECT rule, state, labels['severity'] AS severity, value, active_at, fired_at, "
            "annotations['summary'] AS summary FROM alerts FINAL "
            f"WHERE state IN ('pending', 'firing') AND active_at <= $__toTime AND {PROJECT} "
            "ORDER BY active_at DESC",
            ("rule", "state", "severity", "value", "active_at", "fired_at", "summary"),
            TABLE,
        ),
        width=24,
    )
    b.sql_panel(
        _ts("Alerts fired by rule"),
        Query(
            "SELECT $__timeInterval(fired_time) AS time, rule, count() AS fired FROM ("
            "SELECT rule, assumeNotNull(fired_at) AS fired_time FROM alerts FINAL "
            f"WHERE fired_at IS NOT NULL AND {PROJECT}) "
            "WHERE $__timeFilter(fired_time) GROUP BY time, rule ORDER BY time",
            ("time", "rule", "fired"),
        ),
    )
    b.sql_panel(
        _ts("Notifications by status"),
        Query(
            "SELECT $__timeInterval(created_at) AS time, status, count() AS notifications "
            f"FROM notifications FINAL WHERE $__timeFilter(created_at) AND {PROJECT} "
            "GROUP BY time, status ORDER BY time",
            ("time", "status", "notifications"),
        ),
    )
    b.sql_panel(
        _ts("Delivery attempts"),
        Query(
            "SELECT $__timeInterval(at) AS time, "
            "if(status_code BETWEEN 200 AND 299, 'ok', 'failed') AS outcome, count() AS attempts "
            f"FROM notification_attempts WHERE $__timeFilter(at) AND {PROJECT} "
            "GROUP BY time, outcome ORDER BY time",
            ("time", "outcome", "attempts"),
        ),
    )
    b.sql_panel(
        _table("Failing notifications"),
        Query(
            "SELECT id, receiver, kind, status, attempts, last_error, updated_at "
            f"FROM notifications FINAL WHERE $__timeFilter(created_at) AND {PROJECT} "
            "AND (status = 'dead' OR last_error != '') ORDER BY updated_at DESC LIMIT 50",
            ("id", "receiver", "kind", "status", "attempts", "last_error", "updated_at"),
            TABLE,
        ),
    )
    b.sql_panel(
        _table("Retraining jobs"),
        Query(
            "SELECT created_at, rule, reason, launcher, status, exit_code "
            f"FROM retrain_jobs FINAL WHERE $__timeFilter(created_at) AND {PROJECT} "
            "ORDER BY created_at DESC LIMIT 50",
            ("created_at", "rule", "reason", "launcher", "status", "exit_code"),
            TABLE,
        ),
    )
    b.sql_panel(
        _table("Fine-tune runs"),
        Query(
            "SELECT created_at, id, method, base_model, status, step, total_steps, error "
            f"FROM finetune_runs FINAL WHERE $__timeFilter(created_at) AND {PROJECT} "
            "ORDER BY created_at DESC LIMIT 50",
            ("created_at", "id", "method", "base_model", "status", "step", "total_steps", "error"),
            TABLE,
        ),
    )
    b.sql_panel(
        _ts("Fine-tune curves"),
        Query(
            "SELECT toDateTime(at) AS time, concat(run_id, ' ', name) AS series, value "
            f"FROM finetune_metrics WHERE $__timeFilter(at) AND {PROJECT} ORDER BY time",
            ("time", "series", "value"),
        ),
    )
    b.sql_panel(
        _table("Model versions and gate verdicts"),
        Query(
            "SELECT version, base_version, method, status, "
            "JSONExtractBool(verdict, 'promote') AS promote, "
            "arrayStringConcat(JSONExtract(verdict, 'reasons', 'Array(String)'), '; ') "
            "AS reasons, run_id, snapshot_id, updated_at "
            f"FROM model_versions FINAL WHERE {PROJECT} ORDER BY updated_at DESC LIMIT 50",
            (
                "version",
                "base_version",
                "method",
                "status",
                "promote",
                "reasons",
                "run_id",
                "snapshot_id",
                "updated_at",
            ),
            TABLE,
        ),
        width=24,
    )
    b.prom_panel(
        _ts("Alert engine (Prometheus)"),
        {
            "{{rule}} {{state}}": "sum by (rule, state) (driftline_alerts)",
            "evaluations/s {{outcome}}": "sum by (outcome) "
            "(rate(driftline_alert_evaluations_total[5m]))",
        },
    )
    b.prom_panel(
        _ts("Outbox (Prometheus)"),
        {
            "{{receiver}} {{outcome}}/s": "sum by (receiver, outcome) "
            "(rate(driftline_notifications_total[5m]))",
            "pending": "max(driftline_notifications_pending)",
            "dead": "max(driftline_notifications_dead)",
            "retrain {{status}}": "sum by (status) (increase(driftline_retrain_jobs_total[1h]))",
        },
    )
    return b


BOARDS = {"overview": overview, "drift": drift, "review": review, "alerts": alerts}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    out = {}
    for name, make in BOARDS.items():
        body = make().builder.build()
        out[f"{name}.json"] = json.dumps(body, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    return out


def queries() -> list[Query]:
    """Every ClickHouse panel query of every dashboard."""
    return [q for make in BOARDS.values() for q in make().queries]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
