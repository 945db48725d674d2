"""Times as Alertmanager writes them, including the ones older data may hold."""

from __future__ import annotations

from driftline.alerts.timestamps import ZERO_TIME, parse_rfc3339, rfc3339


def test_rfc3339_round_trips_and_far_future_ends_are_shown_not_raised() -> None:
    assert rfc3339(parse_rfc3339("2026-11-29T12:00:00.123Z")) == "2026-11-29T12:00:00.123Z"
    assert rfc3339(None) == ZERO_TIME
    # A silence stored before ends were bounded, 99999999999h long.
    assert rfc3339(99_999_999_999 * 3600.0) == "9999-12-31T23:59:59.000Z"
