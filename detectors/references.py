"""References: frozen, versioned sets of calls that later windows are compared with.

A reference has a name and a scope (service, model, agent, version = `service.version`; no
keys = the whole project; a key with an empty value = calls without it). Each `create_reference`
under the same name freezes a new version; detectors use the latest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from driftline.detectors import tables
from driftline.ingest.tables import selected
from driftline.store import Store
from driftline.store.sql import Where
from driftline.store.times import to_ns

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


def scope_where(project: str, scope: dict[str, str]) -> Where:
    """Conditions on `c` (llm_calls or call_vectors: same column names) for a project's scope."""
    unknown = sorted(set(scope) - set(SCOPE_COLUMNS))
    if unknown:
        raise DriftReferenceError(
            f"unknown scope key(s) {', '.join(unknown)}; use {', '.join(SCOPE_COLUMNS)}"
        )
    where = Where("c.project_id = {project:String}", project=project)
    for key, value in sorted(scope.items()):  # "" is a value here: no service, for one
        where.add(f"c.{SCOPE_COLUMNS[key]} = {{scope_{key}:String}}", **{f"scope_{key}": value})
    return where


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
    where = scope_where(project, scope).add("c.output_text != ''")
    where.between("c.start_time", to_ns(since) if since else None, to_ns(until) if until else None)
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    found = selected(
        project,
        "c.trace_id AS trace_id, c.span_id AS span_id, "
        "toUnixTimestamp64Nano(c.start_time) AS start_ns",
        str(where),
        where.params,
    )
    members = store.query_arrow(
        f"SELECT * FROM {found} ORDER BY start_ns, trace_id, span_id{limit_sql}", found.params
    )
    if members.num_rows < min_calls:
        raise DriftReferenceError(
            f"only {members.num_rows} calls match; a reference needs at least {min_calls}"
        )
    version = tables.last_reference_version(store, project, name) + 1
    selector = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": limit,
    }
    n = members.num_rows
    tables.insert(
        store,
        "reference_calls",
        {
            "project_id": [project] * n,
            "name": [name] * n,
            "version": [version] * n,
            "trace_id": members.column("trace_id"),
            "span_id": members.column("span_id"),
        },
    )
    starts = members.column("start_ns").to_numpy()
    tables.insert(
        store,
        "drift_references",
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
    )
    return get_reference(store, project, name, version)


def get_reference(store: Store, project: str, name: str, version: int | None = None) -> Reference:
    """The named reference at `version`, or its latest."""
    row = tables.reference_row(store, project, name, version)
    if row is None:
        which = f" version {version}" if version else ""
        raise DriftReferenceError(f"no reference {name!r}{which}")
    return _reference(project, row)


def list_references(store: Store, project: str | None = None) -> list[Reference]:
    """The latest version of every reference (of one project, or of all)."""
    rows = tables.latest_references(store, project)
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


def members_condition(reference: Reference, limit: int, params: dict[str, Any]) -> str:
    """SQL on `c` (llm_calls or call_vectors) for up to `limit` of the reference's calls (a
    seeded uniform sample when it has more), bounded by the reference's time span."""
    return tables.members_condition(
        reference.project, reference.name, reference.version, reference.first_ns,
        reference.last_ns, limit, params,
    )  # fmt: skip


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
    params: dict[str, Any] = {"p": project, "t": trace_id, "s": span_id, "call": call_ns}
    members = members_condition(reference, 1_000_000, params)
    texts = selected(
        project, "c.trace_id AS trace_id, c.span_id AS span_id, c.input_text AS input_text, "
        "c.output_text AS output_text", members, params,
    )  # fmt: skip
    return tables.nearest_responses(store, members, texts, k)
