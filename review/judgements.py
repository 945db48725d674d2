"""A reviewer's judgement of one call, checked against the project's rubric and stored as
feedback rows (source `review`) that share a review id."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.review.config import Rubric
from driftline.review.feedback import CallRef, FeedbackIn, SpanMark


class JudgementError(ValueError):
    """A judgement that does not fit the rubric; the message names the field."""


class Choice(BaseModel):
    """Which of two answers to the same input is better: this call's (`a`) or `other` (`b`)."""

    model_config = ConfigDict(extra="forbid")
    value: Literal["a", "b", "tie"]
    other: CallRef


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scores: dict[str, int] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000)
    choice: Choice | None = None
    spans: list[SpanMark] = Field(default_factory=list, max_length=200)


def check_rubric(judgement: Judgement, rubric: Rubric) -> None:
    """Every criterion known and in range, every label and span label known."""
    for criterion, score in judgement.scores.items():
        if criterion not in rubric.criteria:
            known = ", ".join(rubric.criteria)
            raise JudgementError(f"scores.{criterion}: unknown criterion; the rubric has {known}")
        if not rubric.scale_min <= score <= rubric.scale_max:
            raise JudgementError(
                f"scores.{criterion}: {score} is outside {rubric.scale_min}-{rubric.scale_max}"
            )
    for label in judgement.labels:
        if label not in rubric.labels:
            raise JudgementError(
                f"labels: unknown label {label!r}; one of {', '.join(rubric.labels)}"
            )
    for k, mark in enumerate(judgement.spans):
        if mark.label not in rubric.span_labels:
            raise JudgementError(
                f"spans.{k}.label: unknown {mark.label!r}; one of {', '.join(rubric.span_labels)}"
            )
    if not (judgement.scores or judgement.labels or judgement.correction or judgement.choice
            or judgement.spans or judgement.comment):  # fmt: skip
        raise JudgementError("the judgement is empty: score, label, correct, choose or comment")


def to_feedback(
    judgement: Judgement, trace_id: str, span_id: str, original: str, reviewer: str
) -> list[FeedbackIn]:
    """Feedback rows for a judgement: a score per criterion, a label each, the correction (when
    it changes the answer), the A/B choice and the span marks, under one review id."""
    review_id = "rev_" + uuid.uuid4().hex
    common = {"trace_id": trace_id, "span_id": span_id, "user": reviewer, "review_id": review_id}

    def make(**fields: Any) -> FeedbackIn:
        return FeedbackIn.model_validate({**common, **fields})

    records = [make(name=c, value=s) for c, s in sorted(judgement.scores.items())]
    records += [make(name="label", value=label) for label in judgement.labels]
    correction = _text(judgement.correction or "")
    if correction and correction != _text(original):
        records.append(make(name="correction", correction=correction))
    if judgement.choice is not None:
        this = CallRef(trace_id=trace_id, span_id=span_id)
        records.append(
            make(name="preference", choice=judgement.choice.value, a=this, b=judgement.choice.other)
        )
    if judgement.spans:
        records.append(make(name="highlights", spans=judgement.spans))
    if judgement.comment:
        if records:
            records[0] = records[0].model_copy(update={"comment": judgement.comment})
        else:
            records.append(make(name="comment", value="", comment=judgement.comment))
    return records


def _text(value: str) -> str:
    """For comparing answers: browsers turn line endings into \\n in text boxes."""
    return value.replace("\r\n", "\n").strip()
