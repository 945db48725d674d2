"""Turn any Python value into bounded JSON text for a span attribute, without ever raising."""

from __future__ import annotations

import dataclasses
import json
import json.encoder
from collections.abc import Callable, Mapping
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
        text = _encode(value if _small(value) else _plain(value, 0))
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


def _small(value: Any) -> bool:
    """Scalars, and dicts/lists at most 200 wide whose container items are too: these go to the
    C encoder as they are. Deeper nesting is rare enough to leave to it (a cycle fails there
    and falls back to `_plain`)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind not in _CONTAINERS or len(value) > _MAX_ITEMS:
        return False
    for child in value.values() if kind is dict else value:
        ckind = type(child)
        if ckind not in _SCALARS and (ckind not in _CONTAINERS or len(child) > _MAX_ITEMS):
            return False
    return True


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


def _fast_encoder() -> Callable[[Any], str]:
    """The C encoder, built once: `JSONEncoder.encode` builds a new one on every call. Only
    bounded, acyclic values reach it (`_small` or `_plain`), so it runs without cycle checks."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    encode = make(None, _repr, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))


_encode = _fast_encoder()
