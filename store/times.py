"""The one time convention: a moment is Unix nanoseconds in an `int`, UTC.

Rooms convert at their edges only: text from callers with `parse_time`, `datetime` from
libraries with `to_ns`/`from_ns`, and ClickHouse DateTime64 columns in SQL with
`fromUnixTimestamp64Nano`/`toUnixTimestamp64Nano`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from driftline.store.errors import InputError

NS_PER_SECOND = 1_000_000_000
MAX_NS = 2**63 - 1  # 2262-04-11: the end of Int64 nanoseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


def now_ns() -> int:
    return time.time_ns()


def to_ns(moment: datetime) -> int:
    """A datetime (naive means UTC) as Unix nanoseconds, exactly."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta // timedelta(microseconds=1)) * 1000


def from_ns(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (microseconds: what datetime keeps)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def parse_time(value: str | None, name: str) -> int | None:
    """RFC 3339 or Unix seconds, as Unix nanoseconds (exactly: no float rounding)."""
    if value is None or value == "":
        return None
    try:
        seconds = Decimal(value.strip())
    except InvalidOperation:
        ns = _parse_rfc3339(value, name)
    else:
        if not seconds.is_finite():
            raise InputError(f"{name}={value!r} is not RFC 3339 time or Unix seconds")
        ns = int(seconds * NS_PER_SECOND) if seconds.adjusted() < 11 else -1
    if not 0 <= ns <= MAX_NS:
        raise InputError(f"{name}={value!r} is out of range (1970 to 2262)")
    return ns


def _parse_rfc3339(value: str, name: str) -> int:
    whole, nanos = value, 0
    fraction = _RFC3339_FRACTION.search(value)
    if fraction:  # datetime keeps microseconds only; keep all nine digits
        nanos = int(fraction.group(2)[:9].ljust(9, "0"))
        whole = value[: fraction.start(2) - 1] + value[fraction.end(2) :]
    try:
        moment = datetime.fromisoformat(whole)
    except ValueError:
        raise InputError(f"{name}={value!r} is not RFC 3339 time or Unix seconds") from None
    return to_ns(moment.replace(microsecond=0)) + nanos
