"""A trace's spans as a waterfall: each span after its parent, siblings by start time, with
where its bar starts and how wide it is on the trace's time line."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

_NS_PER_MS = 1_000_000
_MIN_WIDTH = 0.3  # percent: a span too short to see still shows


@dataclass(frozen=True)
class Bar:
    span: dict[str, Any]
    depth: int
    offset_ms: float  # from the trace's first start
    left: float  # percent of the trace's duration
    width: float
    error: bool


def waterfall(spans: list[dict[str, Any]]) -> tuple[list[Bar], float]:
    """The bars in tree order, and the trace's duration in ms. A span whose parent is not in
    the trace (not sent, or still on its way) is a root; so is one caught in a parent cycle."""
    if not spans:
        return [], 0.0
    ordered = sorted(spans, key=lambda s: (s["start_time_unix_nano"], s["span_id"]))
    first = ordered[0]["start_time_unix_nano"]
    last = max(s["start_time_unix_nano"] + s["duration_ms"] * _NS_PER_MS for s in ordered)
    total_ms = max((last - first) / _NS_PER_MS, 1e-6)
    ids = {s["span_id"] for s in ordered}
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    roots = []
    for span in ordered:
        parent = span["parent_span_id"]
        if parent in ids and parent != span["span_id"]:
            children[parent].append(span)
        else:
            roots.append(span)
    bars: list[Bar] = []
    placed: set[str] = set()

    def place(root: dict[str, Any]) -> None:
        stack = [(root, 0)]
        while stack:
            span, depth = stack.pop()
            if span["span_id"] in placed:
                continue
            placed.add(span["span_id"])
            bars.append(_bar(span, depth, first, total_ms))
            stack.extend((child, depth + 1) for child in reversed(children[span["span_id"]]))

    for span in roots + ordered:  # then whatever a cycle kept from every root
        place(span)
    return bars, total_ms


def _bar(span: dict[str, Any], depth: int, first_ns: int, total_ms: float) -> Bar:
    offset = (span["start_time_unix_nano"] - first_ns) / _NS_PER_MS
    left = min(100 * offset / total_ms, 100 - _MIN_WIDTH)
    width = min(max(100 * span["duration_ms"] / total_ms, _MIN_WIDTH), 100 - left)
    error = span["status_code"] == "error" or bool(span.get("error_type"))
    return Bar(span, depth, offset, left, width, error)
