"""Building queries: the one WHERE builder, and relations, the way one room reads another's table.

A WHERE clause is conditions joined by AND, each with its parameters:

    where = Where("project_id = {p:String}", p=project).equals("model", model)
    where.between("start_time", since_ns, until_ns)
    store.query(f"SELECT ... WHERE {where}", where.params)

Filters left as None (or "") add nothing, so a route passes its query parameters straight in.

A room never names another room's table in SQL: the owner returns a `Relation`, a SELECT it
writes (FINAL where needed, bounds on its sorting key), which the reader joins as a subquery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ClickHouse types of the Python values `equals` binds when no type is named.
_TYPES: dict[type, str] = {str: "String", bool: "UInt8", int: "Int64", float: "Float64"}


class Where:
    def __init__(self, condition: str | None = None, **params: Any) -> None:
        self.conditions: list[str] = []
        self.params: dict[str, Any] = {}
        if condition:
            self.add(condition, **params)

    def add(self, condition: str, **params: Any) -> Where:
        """A condition in SQL, with the values of the `{name:Type}` placeholders it uses."""
        clash = params.keys() & self.params.keys()
        if clash:
            raise ValueError(f"parameter {sorted(clash)[0]!r} is bound twice")
        self.conditions.append(condition)
        self.params.update(params)
        return self

    def equals(
        self, column: str, value: Any, type: str | None = None, name: str | None = None
    ) -> Where:
        """`column = value`, unless value is None or ""; the parameter is named after the
        column without its table alias unless `name` says otherwise."""
        if value is None or value == "":
            return self
        name = name or column.rpartition(".")[2]
        type = type or _TYPES[_type_of(value)]
        return self.add(f"{column} = {{{name}:{type}}}", **{name: value})

    def between(
        self, column: str, since_ns: int | None, until_ns: int | None, prefix: str = ""
    ) -> Where:
        """`since <= column < until` for a DateTime64 column, bounds in Unix nanoseconds."""
        for bound, op, ns in (("since", ">=", since_ns), ("until", "<", until_ns)):
            if ns is not None:
                name = prefix + bound
                self.add(
                    f"{column} {op} fromUnixTimestamp64Nano({{{name}:Int64}}, 'UTC')",
                    **{name: ns},
                )
        return self

    def __str__(self) -> str:
        return " AND ".join(f"({c})" if " OR " in c else c for c in self.conditions) or "1"


def _type_of(value: Any) -> type:
    return bool if isinstance(value, bool) else type(value)


@dataclass(frozen=True)
class Relation:
    """A SELECT over a room's tables that another room may join, with its parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"({self.sql})"


def iso(column: str, alias: str) -> str:
    """Select a DateTime64 `column` as RFC 3339 UTC text (`2026-12-05T10:00:00.123Z`)."""
    return f"concat(replaceOne(toString({column}), ' ', 'T'), 'Z') AS {alias}"


def bind(*parts: Where | Relation | dict[str, Any]) -> dict[str, Any]:
    """The parameters of a query made of these parts; one name must not mean two values."""
    merged: dict[str, Any] = {}
    for part in parts:
        params = part if isinstance(part, dict) else part.params
        for name, value in params.items():
            if name in merged and merged[name] != value:
                raise ValueError(f"parameter {name!r} is bound to two values")
            merged[name] = value
    return merged
