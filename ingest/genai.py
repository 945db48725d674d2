"""Bring GenAI messages from any convention into the current OTel shape.

The SQL decoder (mapping.py) handles spans whose `gen_ai.input.messages` /
`gen_ai.output.messages` already follow the current convention. The rest come here: the
deprecated `gen_ai.prompt` / `gen_ai.completion` (plain text or JSON), OpenLLMetry's indexed
`gen_ai.prompt.N.role|content`, OpenInference's `llm.input_messages.N.message.*` and
`input.value` / `output.value`, and content carried on span events. The result is JSON in the
shape `[{"role": ..., "parts": [{"type": "text", "content": ...}], ...}]`.
"""

from __future__ import annotations

from typing import Any

import orjson

Message = dict[str, Any]
Attrs = dict[str, Any]

# Attribute keys that carry message bodies; they become the message columns and are kept out
# of the attribute map (the indexed forms are matched by INDEXED_BODY_PATTERN).
BODY_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "input.value",
    "output.value",
)
INDEXED_BODY_PATTERN = (
    r"^(gen_ai\.(prompt|completion)\.[0-9]+\.(role|content|finish_reason)"
    r"|llm\.(input|output)_messages\.[0-9]+\.message\.(role|content))$"
)
CONTENT_EVENTS = (
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.client.inference.operation.details",
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.choice",
)


def normalise_messages(attrs: Attrs, events: list[dict[str, Any]]) -> tuple[str, str]:
    """(input messages JSON, output messages JSON) from body attributes and content events."""
    merged = _with_content_events(attrs, events)
    return _input_messages(merged), _output_messages(merged)


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode() if value else ""


def _with_content_events(attrs: Attrs, events: list[dict[str, Any]]) -> Attrs:
    """Fold GenAI content carried on span events into the attributes read below."""
    merged = dict(attrs)
    said: list[Message] = []
    choices: list[Message] = []
    for event in events:
        name, body = event.get("name"), event.get("attributes") or {}
        if name in CONTENT_EVENTS[:3]:
            for key, value in body.items():
                merged.setdefault(key, value)
        elif name in CONTENT_EVENTS[3:6]:
            said.append({"role": name.split(".")[1], "content": body.get("content", "")})
        elif name == "gen_ai.choice":
            message = _parse_json(body.get("message"))
            if isinstance(message, dict):
                choices.append({**message, "finish_reason": body.get("finish_reason", "")})
    if said:
        merged.setdefault("gen_ai.input.messages", said)
    if choices:
        merged.setdefault("gen_ai.output.messages", choices)
    return merged


def _parse_json(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        # orjson reads 1024 levels but writes only 254: keep deeper JSON as text
        return value if _too_deep(parsed) else parsed
    return value


def _too_deep(value: Any, limit: int = 128) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _normalise(messages: Any, default_role: str) -> list[Message]:
    """Messages in the current convention's shape: {role, parts: [{type, content}], ...}."""
    if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
        messages = messages["messages"]
    if isinstance(messages, str | int | float) and not isinstance(messages, bool):
        return [{"role": default_role, "parts": [{"type": "text", "content": str(messages)}]}]
    if not isinstance(messages, list):
        return []
    normalised: list[Message] = []
    for message in messages:
        if isinstance(message, str):
            normalised.append({"role": default_role, "parts": _content_parts(message)})
        elif isinstance(message, dict):
            if isinstance(message.get("parts"), list):
                normalised.append(message)
                continue
            out = {k: v for k, v in message.items() if k != "content"}
            out.setdefault("role", default_role)
            out["parts"] = _content_parts(message.get("content"))
            normalised.append(out)
    return normalised


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    content = _parse_json(content) if isinstance(content, str) else content
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, str):
                parts.append({"type": "text", "content": part})
            elif isinstance(part, dict):
                text = part.get("text", part.get("content"))
                if part.get("type") in ("text", "input_text", "output_text") and isinstance(
                    text, str
                ):
                    parts.append({"type": "text", "content": text})
                else:
                    parts.append(part)
        return parts
    if isinstance(content, dict):
        return [content]
    return [{"type": "text", "content": str(content)}]


def _indexed(attrs: Attrs, pattern: str, fields: tuple[str, ...]) -> list[Message]:
    """Flattened messages (prefix.N.field) as a list, in index order."""
    found: list[Message] = []
    for index in range(10_000):
        message = {
            f: attrs[pattern.format(index, f)] for f in fields if pattern.format(index, f) in attrs
        }
        if not message:
            break
        found.append(message)
    return found


def _system(attrs: Attrs) -> list[Message]:
    """`gen_ai.system_instructions` (a list of parts) as one system message."""
    parts = _parse_json(attrs.get("gen_ai.system_instructions"))
    if not parts:
        return []
    return [{"role": "system", "parts": _content_parts(parts)}]


def _input_messages(attrs: Attrs) -> str:
    for source in (
        attrs.get("gen_ai.input.messages"),
        attrs.get("gen_ai.prompt"),
        _indexed(attrs, "gen_ai.prompt.{}.{}", ("role", "content")),
        _indexed(attrs, "llm.input_messages.{}.message.{}", ("role", "content")),
        attrs.get("input.value"),
    ):
        if source:
            return _dump(_system(attrs) + _normalise(_parse_json(source), "user"))
    return _dump(_system(attrs))


def _output_messages(attrs: Attrs) -> str:
    for source in (
        attrs.get("gen_ai.output.messages"),
        attrs.get("gen_ai.completion"),
        _indexed(attrs, "gen_ai.completion.{}.{}", ("role", "content", "finish_reason")),
        _indexed(attrs, "llm.output_messages.{}.message.{}", ("role", "content")),
        attrs.get("output.value"),
    ):
        if source:
            return _dump(_normalise(_parse_json(source), "assistant"))
    return ""
