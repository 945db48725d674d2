"""A trace's spans laid out as a waterfall, whatever the parents say."""

from __future__ import annotations

from typing import Any

from driftline.review.waterfall import waterfall

MS = 1_000_000


def span(span_id: str, parent: str, start_ms: float, duration_ms: float) -> dict[str, Any]:
    return {"span_id": span_id, "parent_span_id": parent, "start_time_unix_nano":
            int(start_ms * MS), "duration_ms": duration_ms, "status_code": "unset"}  # fmt: skip


def test_children_follow_their_parent_and_bars_sit_on_the_time_line() -> None:
    bars, total = waterfall([
        span("b", "a", 10, 20), span("a", "", 0, 100), span("c", "a", 50, 40),
        span("d", "b", 12, 0), span("e", "gone", 60, 10),
    ])  # fmt: skip
    # e's parent is not in the trace: e is a root
    assert [(b.span["span_id"], b.depth) for b in bars] == [
        ("a", 0), ("b", 1), ("d", 2), ("c", 1), ("e", 0),
    ]  # fmt: skip
    assert total == 100
    by_id = {b.span["span_id"]: b for b in bars}
    assert (by_id["c"].left, by_id["c"].width, by_id["c"].offset_ms) == (50, 40, 50)
    assert by_id["d"].width == 0.3  # an instant still shows


def test_a_parent_cycle_shows_every_span_once() -> None:
    bars, _ = waterfall([span("a", "b", 0, 10), span("b", "a", 5, 10), span("c", "c", 6, 1)])
    assert sorted(b.span["span_id"] for b in bars) == ["a", "b", "c"]
    assert all(b.left >= 0 and b.left + b.width <= 100 for b in bars)
