"""Durations written the Prometheus way: `90s`, `15m`, `1h30m`, `2d`, `1w`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError naming the problem."""
    if isinstance(text, bool):
        raise ValueError(f"duration {text!r} must look like 30s, 15m, 1h30m or 2d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration {text} must not be negative")
        return float(text)
    value = text.strip()
    if value == "0":
        return 0.0
    parts = _PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"duration {text!r} must look like 30s, 15m, 1h30m or 2d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """The shortest exact form, e.g. 5400 -> `1h30m`."""
    if seconds == 0:
        return "0s"
    out, rest = "", seconds
    for unit in ("w", "d", "h", "m", "s"):
        count = int(rest // _UNITS[unit])
        if count:
            out += f"{count}{unit}"
            rest -= count * _UNITS[unit]
    if rest:
        out += f"{round(rest * 1000)}ms"
    return out
