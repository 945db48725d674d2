"""sdk.feedback() reaches the collector's feedback table; bad input is refused, never raised."""

from __future__ import annotations

import pytest

from driftline import sdk
from driftline.sdk import observe
from tests.sdk.conftest import LiveCollector, init_for


def test_feedback_of_each_value_kind_is_stored(live: LiveCollector) -> None:
    init_for(live)

    @observe(name="answer")
    def answer() -> tuple[str | None, str | None]:
        return sdk.current_trace_id(), sdk.current_span_id()

    trace_id, span_id = answer()
    assert trace_id and span_id
    ids = [
        sdk.feedback(trace_id, "thumbs", True, comment="spot on", user="u-1"),
        sdk.feedback(trace_id, "accuracy", 4),
        sdk.feedback(span_id, "label", "off-topic"),
    ]
    assert all(ids)
    rows = {r["id"]: r for r in live.feedback(count=3)}
    thumbs, accuracy, label = (rows[i] for i in ids)
    assert (thumbs["kind"], thumbs["value_number"], thumbs["comment"], thumbs["user_id"]) == (
        "boolean",
        1.0,
        "spot on",
        "u-1",
    )
    assert thumbs["source"] == "sdk" and thumbs["trace_id"] == trace_id
    assert (accuracy["kind"], accuracy["value_number"]) == ("numeric", 4.0)
    assert (label["kind"], label["value_string"], label["span_id"]) == (
        "categorical",
        "off-topic",
        span_id,
    )


@pytest.mark.parametrize(
    ("target", "name", "value", "problem"),
    [
        ("not-an-id", "thumbs", 1, "32 or 16 hex"),
        ("0" * 32, "thumbs", 1, "32 or 16 hex"),
        ("a" * 32, "", 1, "name must be"),
        ("a" * 32, "thumbs", float("nan"), "finite number"),
        ("a" * 32, "thumbs", [1, 2], "number, a bool or a string"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(
    live: LiveCollector,
    sdk_log: pytest.LogCaptureFixture,
    target: str,
    name: str,
    value: object,
    problem: str,
) -> None:
    init_for(live)
    assert sdk.feedback(target, name, value) is None  # type: ignore[arg-type]
    assert problem in sdk_log.text


def test_feedback_before_init_is_refused_not_raised(sdk_log: pytest.LogCaptureFixture) -> None:
    assert sdk.feedback("a" * 32, "thumbs", 1) is None
    assert "call driftline.sdk.init() first" in sdk_log.text
