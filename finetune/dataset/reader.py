"""The store as exports read it: a project's feedback up to a cutoff, and the LLM calls it names.

Feedback is read up to a cutoff on `ingested_at` (the filters' `until`), in `created_at, id`
order. Feedback names a call by trace and span, by span alone, or by trace alone, which means
the trace's last LLM call.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from driftline.finetune.dataset.filters import ExportFilters, epoch_ms
from driftline.ingest.tables import calls_named
from driftline.review.feedback import trusted_sources
from driftline.review.tables import feedback_rows
from driftline.store import Store

Message = dict[str, str]


@dataclass(frozen=True)
class Call:
    """An LLM call as the rows need it: prompt (messages and plain), response, split key."""

    trace_id: str
    span_id: str
    messages: list[Message]
    plain: str
    output: str
    conversation_id: str
    model: str
    service: str

    @property
    def key(self) -> tuple[str, str]:
        return self.trace_id, self.span_id

    @property
    def split_key(self) -> str:
        return self.conversation_id or self.trace_id


@dataclass(frozen=True)
class Feedback:
    """One feedback row; `index` is its place in `created_at, id` order."""

    index: int
    id: str
    trace_id: str
    span_id: str
    name: str
    kind: str
    number: float | None
    text: str
    user: str
    source: str
    review_id: str
    details: dict[str, Any]


class Calls:
    """The LLM calls that feedback names, looked up by trace and span."""

    def __init__(self, calls: Iterable[Call]) -> None:
        self.by_key: dict[tuple[str, str], Call] = {}
        self.by_span: dict[str, list[Call]] = defaultdict(list)
        self.by_trace: dict[str, list[Call]] = defaultdict(list)
        for call in calls:  # oldest first
            self.by_key[call.key] = call
            self.by_span[call.span_id].append(call)
            self.by_trace[call.trace_id].append(call)

    def find(self, trace_id: str, span_id: str) -> Call | None:
        """The call; by trace alone, the trace's last LLM call."""
        if span_id and trace_id:
            return self.by_key.get((trace_id, span_id))
        if span_id:
            found = self.by_span.get(span_id)
            return found[0] if found else None
        found = self.by_trace.get(trace_id) if trace_id else None
        return found[-1] if found else None


def read_feedback(store: Store, filters: ExportFilters) -> list[Feedback]:
    """The project's feedback of every source ingested by the cutoff, oldest first (`filters`
    resolved); `trusted` keeps what training may read."""
    assert filters.until is not None
    since = epoch_ms(filters.since) * 1_000_000 if filters.since is not None else None
    rows = feedback_rows(store, filters.project, epoch_ms(filters.until) * 1_000_000, since)
    return [_feedback(i, row) for i, row in enumerate(rows)]


def trusted(feedback: list[Feedback], app_feedback: bool) -> list[Feedback]:
    """Reviewers' judgements, and the apps' feedback when `app_feedback` (the trust boundary)."""
    sources = trusted_sources(app_feedback)
    return [fb for fb in feedback if fb.source in sources]


def read_calls(store: Store, project: str, feedback: list[Feedback]) -> Calls:
    """Every call that the feedback names."""
    ids: set[str] = set()
    for fb in feedback:
        ids.update((fb.trace_id, fb.span_id))
        if fb.kind == "pairwise":
            ids.update(i for ref in pair_refs(fb) for i in ref)
    ids.discard("")
    if not ids:
        return Calls([])
    rows = calls_named(store, project, sorted(ids))
    return Calls(_call(row) for row in rows)


def pair_refs(fb: Feedback) -> list[tuple[str, str]]:
    """The (trace, span) of responses a and b of a pairwise judgement."""
    refs = []
    for side in ("a", "b"):
        ref = fb.details.get(side)
        ref = ref if isinstance(ref, dict) else {}
        refs.append((str(ref.get("trace_id") or ""), str(ref.get("span_id") or "")))
    return refs


def _feedback(index: int, row: dict[str, Any]) -> Feedback:
    """A feedback row from the store; unreadable details count as none."""
    try:
        details = json.loads(row["details"]) if row["details"] else {}
    except json.JSONDecodeError:
        details = {}
    return Feedback(
        index=index,
        id=row["id"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        name=row["name"],
        kind=row["kind"],
        number=row["value_number"],
        text=row["value_string"],
        user=row["user_id"],
        source=row["source"],
        review_id=row["review_id"],
        details=details if isinstance(details, dict) else {},
    )


def _call(row: dict[str, Any]) -> Call:
    """A call row from the store; the prompt falls back to `input_text` as one user turn."""
    messages = _messages(row["input_messages"])
    if not messages and row["input_text"]:
        messages = [{"role": "user", "content": row["input_text"]}]
    users = [m["content"] for m in messages if m["role"] == "user"]
    return Call(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        messages=messages,
        plain=row["input_text"] or "\n".join(users),
        output=row["output_text"],
        conversation_id=row["conversation_id"],
        model=row["response_model"],
        service=row["service"],
    )


def _messages(raw: str) -> list[Message]:
    """OTel GenAI input messages as `[{role, content}]`, text parts joined by newlines."""
    try:
        data = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    out: list[Message] = []
    for message in data if isinstance(data, list) else []:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            texts = [p["content"] for p in parts if _is_text(p)]
        else:
            content = message.get("content")
            texts = [content] if isinstance(content, str) else []
        if texts:
            out.append({"role": str(message.get("role") or "user"), "content": "\n".join(texts)})
    return out


def _is_text(part: Any) -> bool:
    """An OTel GenAI message part that holds text."""
    return (
        isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("content"), str)
    )
