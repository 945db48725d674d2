"""Paging the calls list: where a page ended, as an opaque URL-safe cursor."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from driftline.ingest.tables import Position
from driftline.store.errors import InputError
from driftline.store.times import MAX_NS

_TRACE = re.compile(r"^[0-9a-f]{32}$")
_SPAN = re.compile(r"^[0-9a-f]{16}$")


def next_page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` of `rows` (read with `limit + 1`) and the cursor past them, None when
    nothing follows."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    raw = orjson.dumps([last["start_time_unix_nano"], last["trace_id"], last["span_id"]])
    return rows[:limit], base64.urlsafe_b64encode(raw).decode()


def position(cursor: str) -> Position:
    """Where the cursor's page ended; InputError for anything `next_page` did not make."""
    try:
        ns, trace_id, span_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not (
            type(ns) is int
            and 0 <= ns <= MAX_NS
            and _TRACE.match(trace_id)
            and _SPAN.match(span_id)
        ):
            raise ValueError
    except Exception:
        raise InputError("cursor is not one this API returned") from None
    return ns, trace_id, span_id
