"""Messages as people read them: OTel GenAI messages (`[{role, parts: [...]}]`) as each
message's role and text, tool calls and their results included."""

from __future__ import annotations

import json
from typing import Any


def messages(body: Any, fallback: str, role: str = "user") -> list[dict[str, str]]:
    """Role, text and finish reason (outputs) of each message in `body` (the stored JSON or
    its parsed list); without any, `fallback` as one message of `role`."""
    if isinstance(body, str):
        try:
            body = json.loads(body) if body else []
        except ValueError:
            body = []
    out = []
    for message in body if isinstance(body, list) else []:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        parts = parts if isinstance(parts, list) else []
        text = "\n".join(_text(p) for p in parts if isinstance(p, dict))
        out.append(
            {
                "role": str(message.get("role") or role),
                "content": text,
                "finish_reason": str(message.get("finish_reason") or ""),
            }
        )
    return out or [{"role": role, "content": fallback, "finish_reason": ""}]


def _text(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind == "tool_call":
        return f"→ {part.get('name', 'tool')}({_plain(part.get('arguments', ''))})"
    if kind == "tool_call_response":
        return f"← {_plain(part.get('response', part.get('result', '')))}"
    if "content" in part:
        return _plain(part["content"])
    return _plain(part)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
