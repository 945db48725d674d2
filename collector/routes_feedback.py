"""Feedback API: judgements on traces and spans, from apps (SDK `feedback`) and people."""

from __future__ import annotations

import math
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
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

from driftline.collector.auth import require
from driftline.collector.keys import Principal, Role
from driftline.collector.routes_read import parse_time
from driftline.collector.runtime import ApiError, runtime

router = APIRouter(prefix="/api", tags=["feedback"])
IngestKey = Annotated[Principal, Depends(require(Role.INGEST))]
ReadKey = Annotated[Principal, Depends(require(Role.READ))]

MAX_RECORDS = 1000
_TRACE = re.compile(r"^[0-9a-f]{32}$")
_SPAN = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(r"^[\w.:/ -]{1,128}$")
_dedupe = threading.Lock()  # the check-then-insert below must not interleave


class FeedbackIn(BaseModel):
    """One judgement. `value`: a number (score or rating), a bool (thumbs) or a string (label)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = Field(None, description="sender-made; a retry is stored once")
    trace_id: str | None = Field(None, description="32 lowercase hex characters")
    span_id: str | None = Field(None, description="16 lowercase hex characters")
    name: str = Field(description="what is judged, e.g. thumbs, accuracy, label")
    value: StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=10_000)]
    comment: str | None = Field(None, max_length=10_000)
    user: str | None = Field(None, max_length=256)
    created_at: datetime | None = None

    @field_validator("trace_id", "span_id")
    @classmethod
    def _hex_id(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        value = value.lower()
        pattern, size = (_TRACE, 32) if info.field_name == "trace_id" else (_SPAN, 16)
        if not pattern.match(value) or value == "0" * size:
            raise ValueError(f"must be {size} hex characters, not all zero")
        return value

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
    def _has_target(self) -> FeedbackIn:
        if self.trace_id is None and self.span_id is None:
            raise ValueError("give trace_id or span_id (or both)")
        return self


_RECORDS = TypeAdapter(list[FeedbackIn])


@router.post("/feedback", summary="Store feedback on traces or spans (one object or a list)")
async def post_feedback(request: Request, principal: IngestKey) -> dict[str, Any]:
    records = _parse(await request.body())
    source = "sdk" if request.headers.get("user-agent", "").startswith("driftline-sdk") else "api"
    assert principal.project is not None
    ids, duplicates = store_feedback(request, principal.project, records, source)
    return {"accepted": len(records), "duplicates": duplicates, "ids": ids}


@router.get("/feedback", summary="Feedback, newest first")
def list_feedback(
    request: Request,
    principal: ReadKey,
    trace_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    name: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = ["project_id = {project:String}"]
    params: dict[str, Any] = {"project": principal.project, "limit": limit}
    if trace_id:
        where.append("trace_id = {trace:String}")
        params["trace"] = trace_id
    if name:
        where.append("name = {name:String}")
        params["name"] = name
    for key, op in (("since", ">="), ("until", "<")):
        ns = parse_time(since if key == "since" else until, key)
        if ns is not None:
            where.append(f"created_at {op} fromUnixTimestamp64Nano({{{key}:Int64}}, 'UTC')")
            params[key] = ns
    rows = runtime(request).store.query(
        "SELECT id, trace_id, span_id, name, kind, value_number, value_string, comment, "
        "user_id AS user, source, concat(replaceOne(toString(created_at), ' ', 'T'), 'Z') "
        f"AS created_at FROM feedback FINAL WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id LIMIT {limit:UInt32}",
        params,
    )
    return {"items": [_out(row) for row in rows]}


def _parse(body: bytes) -> list[FeedbackIn]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ApiError(400, "no feedback in the body")
    if len(items) > MAX_RECORDS:
        raise ApiError(400, f"at most {MAX_RECORDS} feedback records per request, got {len(items)}")
    try:
        return _RECORDS.validate_python(items)
    except ValidationError as exc:
        problems = [
            f"{_where(e['loc'], isinstance(data, list))}: {e['msg']}" for e in exc.errors()[:20]
        ]
        raise ApiError(400, "; ".join(problems)) from None


def _where(loc: tuple[Any, ...], batched: bool) -> str:
    """`[3].value` for a list, `value` for a single object; union branch names left out."""
    parts = [p for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p.startswith("str")))]
    path = ".".join(str(p) for p in parts) or "record"
    return f"[{loc[0]}].{path}" if batched else path


def store_feedback(
    request: Request, project: str, records: list[FeedbackIn], source: str
) -> tuple[list[str], int]:
    """Insert the records not yet stored; return every record's id and how many were repeats."""
    store = runtime(request).store
    now = datetime.now(UTC)
    ids = [str(r.id or uuid.uuid4()) for r in records]
    with _dedupe:
        seen = {
            row["value"]
            for row in store.query_with_values(
                "SELECT id AS value FROM feedback WHERE project_id = {project:String} "
                "AND id IN (SELECT value FROM {values})",
                ids,
                {"project": project},
            )
        }
        fresh = [(i, r) for i, r in zip(ids, records, strict=True) if i not in seen]
        fresh = list({i: (i, r) for i, r in fresh}.values())  # repeats within one request
        if fresh:
            store.insert_arrow("feedback", _table(project, fresh, source, now))
    return ids, len(records) - len(fresh)


def _table(
    project: str, records: list[tuple[str, FeedbackIn]], source: str, now: datetime
) -> pa.Table:
    kinds, numbers, strings = [], [], []
    for _, r in records:
        kind, number, text = _value_columns(r.value)
        kinds.append(kind)
        numbers.append(number)
        strings.append(text)
    return pa.table(
        {
            "project_id": [project] * len(records),
            "id": [i for i, _ in records],
            "trace_id": [r.trace_id or "" for _, r in records],
            "span_id": [r.span_id or "" for _, r in records],
            "name": [r.name for _, r in records],
            "kind": kinds,
            "value_number": pa.array(numbers, pa.float64()),
            "value_string": strings,
            "comment": [r.comment or "" for _, r in records],
            "user_id": [r.user or "" for _, r in records],
            "source": [source] * len(records),
            "created_at": pa.array(
                [_utc(r.created_at) or now for _, r in records], pa.timestamp("ms", "UTC")
            ),
        }
    )


def _value_columns(value: bool | int | float | str) -> tuple[str, float | None, str]:
    if isinstance(value, bool):
        return "boolean", float(value), ""
    if isinstance(value, int | float):
        return "numeric", float(value), ""
    return "categorical", None, value


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _out(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["kind"]
    if kind == "boolean":
        value: Any = bool(row["value_number"])
    elif kind == "numeric":
        value = row["value_number"]
    else:
        value = row["value_string"]
    return {
        "id": row["id"],
        "trace_id": row["trace_id"] or None,
        "span_id": row["span_id"] or None,
        "name": row["name"],
        "kind": kind,
        "value": value,
        "comment": row["comment"] or None,
        "user": row["user"] or None,
        "source": row["source"],
        "created_at": row["created_at"],
    }
