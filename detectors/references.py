"""References: frozen, versioned sets of calls that later windows are compared with.

A reference has a name and a scope (service, model, agent, version = `service.version`; no
keys = the whole project; a key with an empty value = calls without it). Each `create_reference`
under the same name freezes a new version; detectors use the latest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftline.detectors import tables
from driftline.ingest.tables import selected
from driftline.store import Store
from driftline.store.arrow import table_of

SCOPE_COLUMNS = {
    "service": "service",
    "model": "response_model",
    "agent": "agent_name",
    "version": "service_version",
}
MIN_CALLS = 50


class DriftReferenceError(ValueError):
    """The reference cannot be made or found; the message says why."""


@dataclass(frozen=True)
class Reference:
    project: str
    name: str
    version: int
    scope: dict[str, str]
    selector: dict[str, Any]
    calls: int
    created_at: str = ""
    first_ns: int = 0
    last_ns: int = 0


def scope_filter(scope: dict[str, str], params: dict[str, Any]) -> str:
    """SQL conditions on `c` (llm_calls or call_vectors: same column names) for a scope; fills
    `params`."""
    unknown = sorted(set(scope) - set(SCOPE_COLUMNS))
    if unknown:
        raise DriftReferenceError(
            f"unknown scope key(s) {', '.join(unknown)}; use {', '.join(SCOPE_COLUMNS)}"
        )
    conditions = ["c.project_id = {project:String}"]
    for key, value in sorted(scope.items()):
        conditions.append(f"c.{SCOPE_COLUMNS[key]} = {{scope_{key}:String}}")
        params[f"scope_{key}"] = value
    return " AND ".join(conditions)


def create_reference(
    store: Store,
    project: str,
    name: str,
    scope: dict[str, str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    min_calls: int = MIN_CALLS,
) -> Reference:
    """Freeze the calls in scope within [since, until) — the first `limit` of them if given
    (so "the first N after a deploy" is `since=deploy time, limit=N`) — as a new version."""
    if not name or len(name) > 128:
        raise DriftReferenceError("name must be 1 to 128 characters")
    # None drops a key; "" keeps it, so `@1.0` (no service) is not every service's 1.0.
    scope = {k: v for k, v in (scope or {}).items() if v is not None}
    if limit is not None and limit < min_calls:
        raise DriftReferenceError(f"limit must be at least {min_calls} calls, got {limit}")
    if since and until and since >= until:
        raise DriftReferenceError("since must be before until")
    params: dict[str, Any] = {"project": project}
    where = scope_filter(scope, params) + " AND c.output_text != ''"
    if since is not None:
        where += " AND c.start_time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')"
        params["since"] = _ns(since)
    if until is not None:
        where += " AND c.start_time < fromUnixTimestamp64Nano({until:Int64}, 'UTC')"
        params["until"] = _ns(until)
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    found = selected(
        project,
        "c.trace_id AS trace_id, c.span_id AS span_id, "
        "toUnixTimestamp64Nano(c.start_time) AS start_ns",
        where,
        params,
    )
    members = store.query_arrow(
        f"SELECT * FROM {found} ORDER BY start_ns, trace_id, span_id{limit_sql}", found.params
    )
    if members.num_rows < min_calls:
        raise DriftReferenceError(
            f"only {members.num_rows} calls match; a reference needs at least {min_calls}"
        )
    version = _next_version(store, project, name)
    selector = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": limit,
    }
    n = members.num_rows
    store.insert_arrow(
        "reference_calls",
        table_of(
            tables.REFERENCE_CALLS,
            {
                "project_id": [project] * n,
                "name": [name] * n,
                "version": [version] * n,
                "trace_id": members.column("trace_id"),
                "span_id": members.column("span_id"),
            },
        ),
    )
    starts = members.column("start_ns").to_numpy()
    store.insert_arrow(
        "drift_references",
        table_of(
            tables.DRIFT_REFERENCES,
            {
                "project_id": [project],
                "name": [name],
                "version": [version],
                "scope": [list(scope.items())],
                "selector": [json.dumps(selector)],
                "calls": [n],
                "first_call": [int(starts.min())],
                "last_call": [int(starts.max())],
            },
        ),
    )
    return get_reference(store, project, name, version)


def get_reference(store: Store, project: str, name: str, version: int | None = None) -> Reference:
    """The named reference at `version`, or its latest."""
    rows = store.query(
        "SELECT name, version, scope, selector, calls, toString(created_at) AS created_at, "
        f"{_SPAN} "
        "FROM drift_references FINAL WHERE project_id = {p:String} AND name = {n:String} "
        + ("AND version = {v:UInt32} " if version is not None else "")
        + "ORDER BY version DESC LIMIT 1",
        {"p": project, "n": name, "v": version or 0},
    )
    if not rows:
        raise DriftReferenceError(
            f"no reference {name!r}" + (f" version {version}" if version else "")
        )
    return _reference(project, rows[0])


def list_references(store: Store, project: str | None = None) -> list[Reference]:
    """The latest version of every reference (of one project, or of all)."""
    rows = store.query(
        "SELECT project_id, name, max(r.version) AS latest, argMax(r.scope, r.version) AS scope, "
        "argMax(r.selector, r.version) AS selector, argMax(r.calls, r.version) AS calls, "
        "toString(argMax(r.created_at, r.version)) AS created_at, "
        "toUnixTimestamp64Nano(argMax(r.first_call, r.version)) AS first_ns, "
        "toUnixTimestamp64Nano(argMax(r.last_call, r.version)) AS last_ns "
        "FROM drift_references AS r FINAL "
        + ("WHERE project_id = {p:String} " if project else "")
        + "GROUP BY project_id, name ORDER BY project_id, name",
        {"p": project or ""},
    )
    for row in rows:
        row["version"] = row.pop("latest")
    return [_reference(row.pop("project_id"), row) for row in rows]


def _reference(project: str, row: dict[str, Any]) -> Reference:
    return Reference(
        project=project,
        name=row["name"],
        version=int(row["version"]),
        scope=dict(row["scope"]),
        selector=json.loads(row["selector"]),
        calls=int(row["calls"]),
        created_at=row["created_at"],
        first_ns=int(row["first_ns"]),
        last_ns=int(row["last_ns"]),
    )


_SPAN = "toUnixTimestamp64Nano(first_call) AS first_ns, toUnixTimestamp64Nano(last_call) AS last_ns"


def members_condition(reference: Reference, limit: int, params: dict[str, Any]) -> str:
    """SQL on `c` (llm_calls or call_vectors) for up to `limit` of the reference's calls (a
    seeded uniform sample when it has more), bounded by the reference's time span."""
    params.update(
        ref_project=reference.project,
        ref_name=reference.name,
        ref_version=reference.version,
        ref_first=reference.first_ns,
        ref_last=reference.last_ns,
        ref_limit=limit,
    )
    return (
        "c.start_time >= fromUnixTimestamp64Nano({ref_first:Int64}, 'UTC') "
        "AND c.start_time <= fromUnixTimestamp64Nano({ref_last:Int64}, 'UTC') "
        "AND (c.trace_id, c.span_id) IN (SELECT trace_id, span_id FROM reference_calls "
        "WHERE project_id = {ref_project:String} AND name = {ref_name:String} "
        "AND version = {ref_version:UInt32} "
        "ORDER BY cityHash64(trace_id, span_id) LIMIT {ref_limit:UInt32})"
    )


def _ns(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _next_version(store: Store, project: str, name: str) -> int:
    rows = store.query(
        "SELECT max(version) AS v FROM drift_references WHERE project_id = {p:String} "
        "AND name = {n:String}",
        {"p": project, "n": name},
    )
    return int(rows[0]["v"] or 0) + 1


def nearest_answers(
    store: Store,
    project: str,
    window_key: str,
    trace_id: str,
    span_id: str,
    call_ns: int,
    k: int = 3,
) -> list[dict[str, Any]]:
    """The reference calls whose responses are closest to this call's (cosine, by the
    detectors' embeddings): what "normal" looked like for the window that flagged it; rows of
    input_text, output_text and similarity."""
    # `{reference}@{version}/{window}`; a per-version reference's name holds an @ itself.
    match = re.fullmatch(r"(.+)@(\d+)/.*", window_key, re.S)
    if match is None:
        return []
    name, version = match.groups()
    try:
        reference = get_reference(store, project, name, int(version))
    except DriftReferenceError:
        return []
    params: dict[str, Any] = {"p": project, "t": trace_id, "s": span_id, "call": call_ns, "k": k}
    members = members_condition(reference, 1_000_000, params)
    texts = selected(
        project, "c.trace_id AS trace_id, c.span_id AS span_id, c.input_text AS input_text, "
        "c.output_text AS output_text", members, params,
    )  # fmt: skip
    # Both sides read within their own time spans: the call's instant and the reference's.
    return store.query(
        "WITH (SELECT any(response_vector) FROM call_vectors WHERE project_id = {p:String} "
        "AND start_time >= fromUnixTimestamp64Nano({call:Int64}, 'UTC') "
        "AND start_time < fromUnixTimestamp64Nano({call:Int64} + 1000000, 'UTC') "
        "AND trace_id = {t:String} AND span_id = {s:String}) AS mine "
        "SELECT t.input_text AS input_text, t.output_text AS output_text, "
        "1 - cosineDistance(c.response_vector, mine) AS similarity FROM call_vectors AS c "
        f"JOIN {texts} AS t ON t.trace_id = c.trace_id AND t.span_id = c.span_id "
        f"WHERE c.project_id = {{p:String}} AND length(mine) > 0 AND {members} "
        "ORDER BY similarity DESC LIMIT {k:UInt32}",
        texts.params,
    )
