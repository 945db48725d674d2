"""`feedback`: attach a user's or a reviewer's judgement to a trace or a span."""

from __future__ import annotations

import logging
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from driftline.sdk import client

logger = logging.getLogger("driftline.sdk")
FeedbackValue = float | int | bool | str

_HEX = re.compile(r"^[0-9a-f]+$")
MAX_NAME = 128
MAX_TEXT = 10_000


def feedback(
    trace_or_span_id: str,
    name: str,
    value: FeedbackValue,
    comment: str | None = None,
    user: str | None = None,
) -> str | None:
    """Queue feedback for the collector; returns its id, or None (logged) when it was refused.

    `trace_or_span_id` is a 32-hex trace id or a 16-hex span id; `value` a number (a rating or
    score), a bool (thumbs up/down) or a string (a label). Never raises and never blocks.
    """
    try:
        record = _record(trace_or_span_id, name, value, comment, user)
    except ValueError as exc:
        logger.error("driftline feedback refused: %s", exc)
        return None
    active = client.active()
    if active is None:
        logger.error("driftline feedback dropped: call driftline.sdk.init() first")
        return None
    active.processor.add_feedback(record)
    return str(record["id"])


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex characters, or None outside any span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_span_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.span_id, "016x") if context.is_valid else None


def _record(
    target: str, name: str, value: Any, comment: str | None, user: str | None
) -> dict[str, Any]:
    record: dict[str, Any] = {"id": str(uuid.uuid4())}
    ident = target.lower() if isinstance(target, str) else ""
    if len(ident) == 32 and _HEX.match(ident) and ident != "0" * 32:
        record["trace_id"] = ident
    elif len(ident) == 16 and _HEX.match(ident) and ident != "0" * 16:
        record["span_id"] = ident
    else:
        raise ValueError(f"trace_or_span_id must be 32 or 16 hex characters, got {target!r}")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValueError(
            f"name must be a non-empty string of at most {MAX_NAME} chars, got {name!r}"
        )
    record["name"] = name
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value!r}")
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"value must be a number, a bool or a string, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"value text is longer than {MAX_TEXT} chars")
    record["value"] = value
    for key, text in (("comment", comment), ("user", user)):
        if text is not None:
            if not isinstance(text, str) or len(text) > MAX_TEXT:
                raise ValueError(f"{key} must be a string of at most {MAX_TEXT} chars")
            record[key] = text
    record["created_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return record
