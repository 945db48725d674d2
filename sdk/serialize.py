"""Turn any Python value into bounded JSON text for a span attribute, without ever raising."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 8
_MAX_ITEMS = 200


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})


def to_text(value: Any, limit: int) -> str:
    """`value` as text: strings as they are, everything else as JSON; capped at `limit` chars."""
    if type(value) is str:
        return truncate(value, limit)
    try:
        # Small plain values (the common case) go straight to the C encoder; anything big,
        # deep or exotic is first copied into a bounded plain form.
        plain = value if _small(value) else _plain(value, 0)
        text = _ENCODER.encode(plain)
    except Exception:  # a hostile __repr__, a cycle, a recursion we did not foresee
        try:
            text = _ENCODER.encode(_plain(value, 0))
        except Exception:
            text = _repr(value)
    return truncate(text, limit)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"…[truncated {len(text) - limit} chars]"
    return text[: max(limit - len(marker), 0)] + marker


def _small(value: Any, depth: int = 0) -> bool:
    """Plain scalars, or dicts (with str keys) and lists of them, at most 4 deep and 200 wide."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth >= 4 or len(value) > _MAX_ITEMS if kind in _CONTAINERS else True:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (type(item) in _SCALARS or _small(item, depth + 1)):
                return False
        return True
    return all(type(item) in _SCALARS or _small(item, depth + 1) for item in value)


def _plain(value: Any, depth: int) -> Any:
    """A JSON-ready copy of `value`, bounded in depth and breadth."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth >= _MAX_DEPTH:
        return _repr(value)
    if isinstance(value, Mapping):
        items = list(value.items())
        plain = {str(k): _plain(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            plain["…"] = f"{len(items) - _MAX_ITEMS} more"
        return plain
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        plain_list = [_plain(v, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            plain_list.append(f"… {len(seq) - _MAX_ITEMS} more")
        return plain_list
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    model_dump = getattr(value, "model_dump", None)  # pydantic models, incl. client responses
    if callable(model_dump):
        try:
            return _plain(model_dump(mode="json"), depth + 1)
        except Exception:
            return _repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name, None), depth + 1)
            for f in dataclasses.fields(value)
        }
    return _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)[:1000]
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_repr)
