"""Feedback: the shapes a judgement takes (Argilla's and Label Studio's), checked against the
calls they judge, stored once per id in `feedback`, and read back."""

from __future__ import annotations

import math
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from driftline.ingest.tables import response_lengths
from driftline.review import tables
from driftline.store import Store
from driftline.store.errors import InputError

Source = Literal["review", "sdk", "api", "judge"]
# The trust boundary around training data: what reviewers judged (identity from their key) is
# what exports, retraining triggers and judge calibration read; what apps send (thumbs, app
# scores, with a sender-chosen `user`) is kept and labelled, and read only where asked for.
REVIEWED: tuple[Source, ...] = ("review",)
FROM_APPS: tuple[Source, ...] = ("sdk", "api")


# The review queue's reason for a judge's audit: reviewers score the call blind, so no page
# shows them the judge's scores of a call waiting for its audit.
JUDGE_AUDIT = "judge_audit"


def trusted_sources(app_feedback: bool) -> tuple[Source, ...]:
    """The feedback sources training data reads: reviewers', and the apps' when asked for."""
    return REVIEWED + FROM_APPS if app_feedback else REVIEWED


_dedupe = threading.Lock()  # the check-then-insert in `store_feedback` must not interleave

MAX_RECORDS = 1000
_TRACE = re.compile(r"^[0-9a-f]{32}$")
_SPAN = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(r"^[\w.:/ -]{1,128}$")


class CallRef(BaseModel):
    """An LLM call, by its span (and trace)."""

    model_config = ConfigDict(extra="forbid")

    trace_id: str
    span_id: str

    @field_validator("trace_id", "span_id")
    @classmethod
    def _hex_id(cls, value: str, info: Any) -> str:
        return _check_id(value, info.field_name)


class SpanMark(BaseModel):
    """Characters `[start, end)` of the response, marked `label` (e.g. good, bad)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=64)
    start: int = Field(ge=0)
    end: int = Field(ge=1)
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _ordered(self) -> SpanMark:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


_SHAPES = ("value", "correction", "choice", "spans")
Value = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=10_000)]


class FeedbackIn(BaseModel):
    """One judgement, in one of four shapes: `value` (a number for a score or rating, a bool
    for thumbs, a string for a label), `correction` (the response as it should have been),
    `choice` between responses `a` and `b` to the same input, or `spans` of the response."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = Field(None, description="sender-made; a retry is stored once")
    trace_id: str | None = Field(None, description="32 lowercase hex characters")
    span_id: str | None = Field(None, description="16 lowercase hex characters")
    name: str = Field(description="what is judged, e.g. thumbs, accuracy, label")
    value: (
        StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=10_000)] | None
    ) = None
    correction: str | None = Field(None, min_length=1, max_length=100_000)
    choice: Literal["a", "b", "tie"] | None = None
    a: CallRef | None = Field(None, description="with choice: the first response")
    b: CallRef | None = Field(None, description="with choice: the second response")
    spans: list[SpanMark] | None = Field(None, min_length=1, max_length=200)
    comment: str | None = Field(None, max_length=10_000)
    user: str | None = Field(None, max_length=256)
    review_id: str | None = Field(None, max_length=128, description="groups one submission")
    created_at: datetime | None = None

    @field_validator("trace_id", "span_id")
    @classmethod
    def _hex_id(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _check_id(value, info.field_name)

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-128 letters, digits, spaces or _ . : / -")
        return value

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> FeedbackIn:
        if self.trace_id is None and self.span_id is None:
            raise ValueError("give trace_id or span_id (or both)")
        given = [name for name in _SHAPES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, correction, choice or spans")
        pair = (self.a is not None, self.b is not None)
        if self.choice is not None and pair != (True, True):
            raise ValueError("a choice needs both responses, a and b")
        if self.choice is None and any(pair):
            raise ValueError("a and b go with a choice")
        if self.spans is not None and self.span_id is None:
            raise ValueError("spans need the span_id of the LLM call whose response they mark")
        return self

    @property
    def kind(self) -> str:
        if self.correction is not None:
            return "correction"
        if self.choice is not None:
            return "pairwise"
        if self.spans is not None:
            return "spans"
        if isinstance(self.value, bool):
            return "boolean"
        return "numeric" if isinstance(self.value, int | float) else "categorical"


def _check_id(value: str, field: str) -> str:
    value = value.lower()
    pattern, size = (_TRACE, 32) if field == "trace_id" else (_SPAN, 16)
    if not pattern.match(value) or value == "0" * size:
        raise ValueError(f"must be {size} hex characters, not all zero")
    return value


_RECORDS = TypeAdapter(list[FeedbackIn])


def parse(body: bytes) -> list[FeedbackIn]:
    """A JSON body of one record or a list of them; InputError names each problem."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"body is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise InputError("no feedback in the body")
    if len(items) > MAX_RECORDS:
        raise InputError(f"at most {MAX_RECORDS} feedback records per request, got {len(items)}")
    try:
        return _RECORDS.validate_python(items)
    except ValidationError as exc:
        problems = [
            f"{_where(e['loc'], isinstance(data, list))}: {e['msg']}" for e in exc.errors()[:20]
        ]
        raise InputError("; ".join(problems)) from None


def _where(loc: tuple[Any, ...], batched: bool) -> str:
    """`[3].value` for a list, `value` for a single object; union branch names left out."""
    parts = [p for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p.startswith("str")))]
    path = ".".join(str(p) for p in parts) or "record"
    return f"[{loc[0]}].{path}" if batched else path


def store_feedback(
    store: Store, project: str, records: list[FeedbackIn], source: Source
) -> tuple[list[str], int]:
    """Insert the records not yet stored; return every record's id and how many were repeats."""
    now = datetime.now(UTC)
    ids = [str(r.id or uuid.uuid4()) for r in records]
    with _dedupe:
        seen = tables.stored_ids(store, project, ids)
        fresh = [(i, r) for i, r in zip(ids, records, strict=True) if i not in seen]
        fresh = list({i: (i, r) for i, r in fresh}.values())  # repeats within one request
        if fresh:
            tables.insert_feedback(store, _columns(project, fresh, source, now))
    return ids, len(records) - len(fresh)


def _columns(
    project: str, records: list[tuple[str, FeedbackIn]], source: str, now: datetime
) -> dict[str, list[Any]]:
    columns = [_value_columns(r) for _, r in records]
    return {
        "project_id": [project] * len(records),
        "id": [i for i, _ in records],
        "trace_id": [r.trace_id or "" for _, r in records],
        "span_id": [r.span_id or "" for _, r in records],
        "name": [r.name for _, r in records],
        "kind": [r.kind for _, r in records],
        "value_number": [c[0] for c in columns],
        "value_string": [c[1] for c in columns],
        "comment": [r.comment or "" for _, r in records],
        "user_id": [r.user or "" for _, r in records],
        "source": [source] * len(records),
        "review_id": [r.review_id or "" for _, r in records],
        "details": [c[2] for c in columns],
        "created_at": [_utc(r.created_at) or now for _, r in records],
    }


def _value_columns(record: FeedbackIn) -> tuple[float | None, str, str]:
    """`value_number`, `value_string` and `details` (JSON) of a record."""
    if record.correction is not None:
        return None, record.correction, ""
    if record.choice is not None:
        assert record.a is not None and record.b is not None
        pair = {"a": record.a.model_dump(), "b": record.b.model_dump()}
        return None, record.choice, orjson.dumps(pair).decode()
    if record.spans is not None:
        marks = [m.model_dump(exclude_none=True) for m in record.spans]
        return None, "", orjson.dumps({"spans": marks}).decode()
    value = record.value
    if isinstance(value, bool | int | float):
        return float(value), "", ""
    return None, value or "", ""


def check_targets(store: Store, project: str, records: list[FeedbackIn], batched: bool) -> None:
    """Spans must lie inside the response they mark, and a choice's responses must exist."""
    spans = {r.span_id for r in records if r.spans and r.span_id}
    spans |= {c.span_id for r in records if r.choice for c in (r.a, r.b) if c is not None}
    if not spans:
        return
    lengths = response_lengths(store, project, sorted(spans))

    def length(trace_id: str | None, span_id: str | None) -> int | None:
        hits = [n for (t, sp), n in lengths.items() if sp == span_id and trace_id in (None, t)]
        return hits[0] if hits else None

    for i, record in enumerate(records):
        where = f"[{i}]." if batched else ""
        for side, call in (("a", record.a), ("b", record.b)):
            if call is not None and length(call.trace_id, call.span_id) is None:
                raise InputError(f"{where}{side}: no LLM call {call.trace_id}/{call.span_id}")
        if record.spans is None:
            continue
        size = length(record.trace_id, record.span_id)
        if size is None:
            raise InputError(f"{where}spans: no LLM call with span_id {record.span_id}")
        for k, mark in enumerate(record.spans):
            if mark.end > size:
                raise InputError(
                    f"{where}spans.{k}: end {mark.end} is past the end of the response "
                    f"({size} characters)",
                )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class FeedbackFilter:
    trace_id: str | None = None
    name: str | None = None
    source: Source | None = None
    since_ns: int | None = None
    until_ns: int | None = None


def read_feedback(
    store: Store, project: str, f: FeedbackFilter, limit: int
) -> list[dict[str, Any]]:
    """Feedback newest first, in the shapes it was sent in."""
    rows = tables.sent_feedback(
        store, project, f.trace_id, f.name, f.source, f.since_ns, f.until_ns, limit
    )
    return [_out(row) for row in rows]


def _out(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["kind"]
    shape: dict[str, Any] = {}
    if kind == "boolean":
        shape["value"] = bool(row["value_number"])
    elif kind == "numeric":
        shape["value"] = row["value_number"]
    elif kind == "correction":
        shape["correction"] = row["value_string"]
    elif kind == "pairwise":
        shape = {"choice": row["value_string"], **orjson.loads(row["details"])}
    elif kind == "spans":
        shape = orjson.loads(row["details"])
    else:
        shape["value"] = row["value_string"]
    return {
        "id": row["id"],
        "trace_id": row["trace_id"] or None,
        "span_id": row["span_id"] or None,
        "name": row["name"],
        "kind": kind,
        **shape,
        "review_id": row["review_id"] or None,
        "comment": row["comment"] or None,
        "user": row["user"] or None,
        "source": row["source"],
        "created_at": row["created_at"],
    }
