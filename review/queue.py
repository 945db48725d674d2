"""What reviewers work through: queued calls with their texts and review state, and one item
with why it was flagged and the reviewer's draft."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from driftline.detectors.tables import queued, queued_keys, window_tests
from driftline.ingest.tables import review_texts
from driftline.review.conversation import messages
from driftline.review.tables import draft_body, marks, review_counts
from driftline.store import Store
from driftline.store.sql import Where, bind

Status = Literal["todo", "reviewed", "skipped", "all"]


@dataclass(frozen=True)
class QueueFilter:
    reason: str | None = None
    model: str | None = None
    service: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    status: Status = "todo"


_COLUMNS = """toString(q.trace_id) AS trace_id, toString(q.span_id) AS span_id,
    toUnixTimestamp64Milli(q.call_time) AS call_ms, q.reasons AS reasons, q.scores AS scores,
    q.thresholds AS thresholds, q.notes AS notes,
    q.priority AS priority, q.source AS source, q.window_key AS window_key, q.scope AS scope,
    c.input_text AS input_text, c.output_text AS output_text, c.model AS model,
    c.service AS service, c.input_messages AS input_messages,
    c.conversation_id AS conversation_id, r.reviews AS reviews, r.mine AS mine, m.mark AS mark"""


def _joined(project: str, reviewer: str) -> tuple[str, dict[str, Any]]:
    """FROM the queue, with each call's texts, its reviews and this reviewer's mark."""
    queue = queued(project)
    calls = review_texts(project, queued_keys(project))
    reviews, marked = review_counts(project, reviewer), marks(project, reviewer)
    sql = f"""
FROM {queue} AS q
LEFT JOIN {calls} AS c ON c.trace_id = q.trace_id AND c.span_id = q.span_id
LEFT JOIN {reviews} AS r ON r.trace_id = toString(q.trace_id) AND r.span_id = toString(q.span_id)
LEFT JOIN {marked} AS m ON m.trace_id = toString(q.trace_id) AND m.span_id = toString(q.span_id)
"""
    return sql, bind(queue, calls, reviews, marked)


def items(
    store: Store, project: str, reviewer: str, per_item: int, f: QueueFilter, limit: int = 100
) -> list[dict[str, Any]]:
    """Queued calls by priority. `todo`: fewer than `per_item` reviews and none by, nor
    skipped by, this reviewer, so each call gets independent reviews from different people."""
    joined, params = _joined(project, reviewer)
    where = Where()
    if f.reason:
        where.add("has(q.reasons, {reason:String})", reason=f.reason)
    where.equals("c.model", f.model).equals("c.service", f.service)
    where.between("q.call_time", f.since_ns, f.until_ns)
    where.add(
        {
            "todo": "r.reviews < {k:UInt32} AND NOT r.mine AND m.mark != 'skipped' "
            "AND m.mark != 'submitted'",
            "reviewed": "r.mine OR m.mark = 'submitted'",
            "skipped": "m.mark = 'skipped'",
            "all": "1",
        }[f.status],
        **({"k": per_item} if f.status == "todo" else {}),
    )
    rows = store.query(
        f"SELECT {_COLUMNS} {joined} WHERE {where} "
        "ORDER BY q.priority DESC, q.call_time DESC LIMIT {limit:UInt32}",
        bind(params, where, {"limit": limit}),
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
    joined, params = _joined(project, reviewer)
    rows = store.query(
        f"SELECT {_COLUMNS}, toString(q.call_time) AS call_time {joined} "
        "WHERE q.trace_id = {t:String} AND q.span_id = {s:String}",
        bind(params, {"t": trace_id, "s": span_id}),
    )
    if not rows:
        return None
    found = _maps(rows[0])
    found["messages"] = messages(found.pop("input_messages") or "", found["input_text"] or "")
    found["draft"] = draft(store, project, reviewer, trace_id, span_id)
    found["tests"] = window_tests(store, project, found["window_key"])
    return found


def draft(store: Store, project: str, reviewer: str, trace_id: str, span_id: str) -> dict[str, Any]:
    body = draft_body(store, project, reviewer, trace_id, span_id)
    return dict(json.loads(body)) if body else {}
