"""Grafana's side of a ClickHouse panel query: template variables, then the plugin's macros."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

# As grafana-clickhouse-datasource expands them (pkg/macros): whole seconds, UTC.
_MACROS = {
    r"\$__timeFilter\(([^()]+)\)": "{0} >= toDateTime({start}) AND {0} <= toDateTime({end})",
    r"\$__timeInterval\(([^()]+)\)": "toStartOfInterval(toDateTime({0}), INTERVAL {step} second)",
    r"\$__fromTime\b": "toDateTime({start})",
    r"\$__toTime\b": "toDateTime({end})",
    r"\$__interval_s\b": "{step}",
}


def expand(
    sql: str, start: datetime, end: datetime, step_s: int, variables: Mapping[str, str]
) -> str:
    """The SQL the plugin sends for this time range, interval and variable values."""
    for name in sorted(variables, key=len, reverse=True):
        sql = sql.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    values = {"start": int(start.timestamp()), "end": int(end.timestamp()), "step": max(step_s, 1)}
    for pattern, template in _MACROS.items():

        def fill(match: re.Match[str], template: str = template) -> str:
            return template.format(*(a.strip() for a in match.groups()), **values)

        sql = re.sub(pattern, fill, sql)
    if "$" in sql:
        raise ValueError(f"unexpanded macro or variable in: {sql}")
    return sql
