"""What reviewers work through: queued calls with their texts and review state, one item with
why it was flagged, and another answer to the same input for an A/B choice."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from driftline.store import Store

Status = Literal["todo", "reviewed", "skipped", "all"]


@dataclass(frozen=True)
class QueueFilter:
    reason: str | None = None
    model: str | None = None
    service: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    status: Status = "todo"


_REVIEWS = """(SELECT trace_id, span_id, uniqExact(user_id) AS reviews,
    max(user_id = {me:String}) AS mine FROM feedback FINAL
    WHERE project_id = {p:String} AND source = 'review' GROUP BY trace_id, span_id)"""
_MARKS = """(SELECT trace_id, span_id, status AS mark FROM review_marks FINAL
    WHERE project_id = {p:String} AND reviewer = {me:String})"""
_CALLS = """(SELECT trace_id, span_id, input_text, output_text, input_messages,
    if(response_model != '', response_model, request_model) AS model, service, conversation_id
    FROM llm_calls FINAL WHERE project_id = {p:String} AND (trace_id, span_id) IN
    (SELECT trace_id, span_id FROM review_queue WHERE project_id = {p:String}))"""
_JOINS = f"""
FROM review_queue AS q FINAL
LEFT JOIN {_CALLS} AS c ON c.trace_id = q.trace_id AND c.span_id = q.span_id
LEFT JOIN {_REVIEWS} AS r ON r.trace_id = toString(q.trace_id) AND r.span_id = toString(q.span_id)
LEFT JOIN {_MARKS} AS m ON m.trace_id = toString(q.trace_id) AND m.span_id = toString(q.span_id)
"""
_COLUMNS = """toString(q.trace_id) AS trace_id, toString(q.span_id) AS span_id,
    toUnixTimestamp64Milli(q.call_time) AS call_ms, q.reasons AS reasons, q.scores AS scores,
    q.thresholds AS thresholds, q.notes AS notes,
    q.priority AS priority, q.source AS source, q.window_key AS window_key, q.scope AS scope,
    c.input_text AS input_text, c.output_text AS output_text, c.model AS model,
    c.service AS service, c.input_messages AS input_messages,
    c.conversation_id AS conversation_id, r.reviews AS reviews, r.mine AS mine, m.mark AS mark"""


def queue(
    store: Store, project: str, reviewer: str, per_item: int, f: QueueFilter, limit: int = 100
) -> list[dict[str, Any]]:
    """Queued calls by priority. `todo`: fewer than `per_item` reviews and none by, nor
    skipped by, this reviewer, so each call gets independent reviews from different people."""
    where = ["q.project_id = {p:String}"]
    params: dict[str, Any] = {"p": project, "me": reviewer, "k": per_item, "limit": limit}
    for column, value in (("has(q.reasons, {reason:String})", f.reason),
                          ("c.model = {model:String}", f.model),
                          ("c.service = {service:String}", f.service)):  # fmt: skip
        if value:
            where.append(column)
            params[column.split("{")[1].split(":")[0]] = value
    if f.since_ns is not None:
        where.append("q.call_time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')")
        params["since"] = f.since_ns
    if f.until_ns is not None:
        where.append("q.call_time < fromUnixTimestamp64Nano({until:Int64}, 'UTC')")
        params["until"] = f.until_ns
    where.append(
        {
            "todo": "r.reviews < {k:UInt32} AND NOT r.mine AND m.mark != 'skipped' "
            "AND m.mark != 'submitted'",
            "reviewed": "(r.mine OR m.mark = 'submitted')",
            "skipped": "m.mark = 'skipped'",
            "all": "1",
        }[f.status]
    )
    rows = store.query(
        f"SELECT {_COLUMNS} {_JOINS} WHERE {' AND '.join(where)} "
        "ORDER BY q.priority DESC, q.call_time DESC LIMIT {limit:UInt32}",
        params,
    )
    return [_maps(row) for row in rows]


def _maps(row: dict[str, Any]) -> dict[str, Any]:
    """Map columns arrive as lists of pairs."""
    maps = ("scores", "thresholds", "notes", "scope")
    return {**row, **{name: dict(row[name]) for name in maps}}


def item(
    store: Store, project: str, reviewer: str, trace_id: str, span_id: str
) -> dict[str, Any] | None:
    """One queued call with its texts, review state, the reviewer's draft and window tests."""
    rows = store.query(
        f"SELECT {_COLUMNS}, toString(q.call_time) AS call_time {_JOINS} "
        "WHERE q.project_id = {p:String} AND q.trace_id = {t:String} AND q.span_id = {s:String}",
        {"p": project, "me": reviewer, "t": trace_id, "s": span_id},
    )
    if not rows:
        return None
    found = _maps(rows[0])
    found["messages"] = messages(found.pop("input_messages") or "", found["input_text"] or "")
    found["draft"] = draft(store, project, reviewer, trace_id, span_id)
    found["tests"] = store.query(
        "SELECT detector, statistic, p_value, rejected FROM findings FINAL "
        "WHERE project_id = {p:String} AND window_key = {k:String} ORDER BY detector",
        {"p": project, "k": found["window_key"]},
    )
    return found


def alternative(store: Store, project: str, found: dict[str, Any]) -> dict[str, Any] | None:
    """The latest other answer to the same input (another model version or prompt)."""
    rows = store.query(
        "SELECT toString(trace_id) AS trace_id, toString(span_id) AS span_id, output_text, "
        "if(response_model != '', response_model, request_model) AS model, service_version "
        "FROM llm_calls WHERE project_id = {p:String} AND input_text = {input:String} "
        "AND span_id != {s:String} AND output_text != '' AND output_text != {out:String} "
        "ORDER BY start_time DESC LIMIT 1",
        {"p": project, "input": found["input_text"] or "", "s": found["span_id"],
         "out": found["output_text"] or ""},
    )  # fmt: skip
    return rows[0] if rows and found["input_text"] else None


def nearest_reference(
    store: Store, project: str, found: dict[str, Any], k: int = 3
) -> list[dict[str, Any]]:
    """The reference calls whose responses are closest to this one (cosine, by the detectors'
    embeddings): what "normal" looked like for the window that flagged it."""
    # `{reference}@{version}/{window}`; a per-version reference's name holds an @ itself.
    match = re.fullmatch(r"(.+)@(\d+)/.*", str(found["window_key"]), re.S)
    if match is None:
        return []
    name, version = match.groups()
    from driftline.detectors.references import ReferenceError, get_reference, members_condition

    try:
        reference = get_reference(store, project, name, int(version))
    except ReferenceError:
        return []
    params: dict[str, Any] = {"p": project, "t": found["trace_id"], "s": found["span_id"],
                              "call": int(found["call_ms"]), "k": k}  # fmt: skip
    members = members_condition(reference, 1_000_000, params)
    # Both sides read within their own time spans: the call's instant and the reference's.
    return store.query(
        "WITH (SELECT any(response_vector) FROM call_vectors WHERE project_id = {p:String} "
        "AND start_time >= fromUnixTimestamp64Milli({call:Int64}, 'UTC') "
        "AND start_time < fromUnixTimestamp64Milli({call:Int64} + 1, 'UTC') "
        "AND trace_id = {t:String} AND span_id = {s:String}) AS mine "
        "SELECT t.input_text AS input_text, t.output_text AS output_text, "
        "1 - cosineDistance(c.response_vector, mine) AS similarity FROM call_vectors AS c "
        "JOIN (SELECT trace_id, span_id, input_text, output_text FROM llm_calls AS c "
        f"WHERE project_id = {{p:String}} AND {members}) AS t "
        "ON t.trace_id = c.trace_id AND t.span_id = c.span_id "
        f"WHERE c.project_id = {{p:String}} AND length(mine) > 0 AND {members} "
        "ORDER BY similarity DESC LIMIT {k:UInt32}",
        params,
    )


def draft(store: Store, project: str, reviewer: str, trace_id: str, span_id: str) -> dict[str, Any]:
    rows = store.query(
        "SELECT body FROM review_marks FINAL WHERE project_id = {p:String} "
        "AND reviewer = {me:String} AND trace_id = {t:String} AND span_id = {s:String} "
        "AND status = 'draft'",
        {"p": project, "me": reviewer, "t": trace_id, "s": span_id},
    )
    return dict(json.loads(rows[0]["body"])) if rows and rows[0]["body"] else {}


def messages(input_messages: str, input_text: str) -> list[dict[str, str]]:
    """The conversation as role and text, from the canonical messages (else the plain text)."""
    try:
        parsed = json.loads(input_messages) if input_messages else []
    except ValueError:
        parsed = []
    out = []
    for message in parsed if isinstance(parsed, list) else []:
        parts = message.get("parts") if isinstance(message, dict) else None
        text = "\n".join(str(p.get("content", "")) for p in parts or [] if isinstance(p, dict))
        out.append({"role": str(message.get("role", "user")), "content": text})
    return out or [{"role": "user", "content": input_text}]
