"""Judged calls as annotation tools show them, each with its reviewers' latest judgements: what
the Argilla and Label Studio formats share. Pairwise choices have no per-call shape and are
left out (and counted)."""

from __future__ import annotations

from typing import Any

from driftline.finetune.dataset.reader import Call, Calls, Feedback
from driftline.finetune.dataset.rows import Tally


def judged_calls(
    feedback: list[Feedback], calls: Calls, tally: Tally, fmt: str
) -> list[tuple[Call, list[Feedback]]]:
    """Each judged call with its feedback, in the order calls were first judged."""
    grouped: dict[tuple[str, str], tuple[Call, list[Feedback]]] = {}
    for fb in feedback:
        if fb.kind == "pairwise":
            tally.skipped[f"pairwise_not_in_{fmt.replace('-', '_')}"] += 1
            continue
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None:
            tally.skipped["call_not_found"] += 1
            continue
        grouped.setdefault(call.key, (call, []))[1].append(fb)
    return list(grouped.values())


def question_name(name: str) -> str:
    """A question name Argilla accepts: lowercase letters, digits, `_` and `-`."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in name)
    return cleaned.lower() or "feedback"


def reviewer_of(fb: Feedback) -> str:
    """Who judged: the user, else the review, else `anonymous`."""
    return fb.user or fb.review_id or "anonymous"


def latest_judgements(feedback: list[Feedback], tally: Tally) -> list[Feedback]:
    """One judgement per reviewer and question: the latest; earlier ones count as replaced."""
    latest: dict[tuple[str, str], Feedback] = {}
    for fb in feedback:
        key = (reviewer_of(fb), question_name(fb.name))
        if key in latest:
            tally.skipped["replaced_by_later"] += 1
        latest[key] = fb
    return sorted(latest.values(), key=lambda fb: fb.index)


def span_marks(fb: Feedback) -> list[dict[str, Any]]:
    """The well-formed `{label, start, end}` marks of a spans judgement."""
    marks = fb.details.get("spans")
    return [
        m
        for m in (marks if isinstance(marks, list) else [])
        if isinstance(m, dict)
        and isinstance(m.get("label"), str)
        and isinstance(m.get("start"), int)
        and isinstance(m.get("end"), int)
    ]


def rating(value: float | None) -> int | float | None:
    """A score as an int when it is whole (rating questions take ints)."""
    return int(value) if value is not None and value.is_integer() else value


def answer_value(fb: Feedback) -> Any:
    """The value an Argilla question of the feedback's kind holds."""
    if fb.kind == "numeric":
        return rating(fb.number)  # RatingQuestion
    if fb.kind == "boolean":
        return "true" if fb.number else "false"  # LabelQuestion
    if fb.kind == "spans":  # SpanQuestion
        return [{"label": m["label"], "start": m["start"], "end": m["end"]} for m in span_marks(fb)]
    return fb.text  # LabelQuestion (categorical) or TextQuestion (correction)


def call_metadata(call: Call) -> dict[str, str]:
    """Where a record's call comes from."""
    return {
        "trace_id": call.trace_id,
        "span_id": call.span_id,
        "conversation_id": call.conversation_id,
        "model": call.model,
        "service": call.service,
    }
