"""Epoch seconds to and from the forms the store and Alertmanager use."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended" endsAt
# Silences stored before their end was bounded may end past what datetime can show: shown as
# the last moment it can, rather than failing every listing of the project's silences.
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def rfc3339(seconds: float | None) -> str:
    """`2026-11-29T12:00:00.123Z`, or Alertmanager's zero time for None."""
    if seconds is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(min(seconds, _LAST), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time; raises ValueError naming the text."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-29T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def ms_column(values: list[float | None]) -> pa.Array:
    """A DateTime64(3) column from epoch seconds (None stays null)."""
    return pa.array(
        [None if v is None else round(v * 1000) for v in values], pa.timestamp("ms", "UTC")
    )


def seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000
