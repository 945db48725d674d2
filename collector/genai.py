"""Map OTLP spans to rows: GenAI spans to `llm_calls`, every other span to `spans`.

Reads the current OTel GenAI conventions, their deprecated names (OpenLLMetry's indexed
`gen_ai.prompt.N.*`, `gen_ai.system`, `gen_ai.usage.prompt_tokens`, content events) and
OpenInference (`llm.*`, `input.value`, `session.id`), so apps instrumented by any of them work.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any

import orjson
from driftline.collector.pricing import PriceTable
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Attrs = dict[str, Any]
Message = dict[str, Any]

MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_GENAI_MARKERS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "llm.request.type",
)
_OPENINFERENCE_OPERATIONS = {"LLM": "chat", "EMBEDDING": "embeddings"}
_LEGACY_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_STATUS = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}
_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
# Body attributes that become the message columns; kept out of the attribute map so they are
# stored once. Indexed forms (gen_ai.prompt.0.content, llm.input_messages.0.message.role) too.
_BODY_KEYS = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.completion",
        "input.value",
        "output.value",
    }
)
_INDEXED_BODY = re.compile(
    r"^(gen_ai\.(prompt|completion)\.(\d+)\.(role|content|finish_reason)"
    r"|llm\.(input|output)_messages\.(\d+)\.message\.(role|content))$"
)
_MAX_U32 = 2**32 - 1


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def attributes(kvs: Iterable[KeyValue]) -> Attrs:
    return {kv.key: any_value(kv.value) for kv in kvs}


def as_text(value: Any) -> str:
    """An attribute value as the string stored in a Map(String, String) column."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def is_llm_call(attrs: Attrs) -> bool:
    """A span that records a model call (or a GenAI operation), as opposed to app plumbing."""
    if any(key in attrs for key in _GENAI_MARKERS):
        return True
    return attrs.get("openinference.span.kind") in _OPENINFERENCE_OPERATIONS


class SpanMapper:
    """Turns decoded spans into row dicts for `llm_calls` and `spans`."""

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices

    def common(self, project: str, span: Span, resource: Attrs) -> dict[str, Any]:
        """Columns shared by both tables."""
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        return {
            "project_id": project,
            "trace_id": span.trace_id.hex(),
            "span_id": span.span_id.hex(),
            "parent_span_id": span.parent_span_id.hex(),
            "start_time": start,
            "end_time": max(end, start),
            "duration_ms": max(end - start, 0) / 1e6,
            "service": as_text(resource.get("service.name", "unknown_service")),
            "service_version": as_text(resource.get("service.version", "")),
            "environment": as_text(
                resource.get(
                    "deployment.environment.name", resource.get("deployment.environment", "")
                )
            ),
            "span_name": span.name,
            "status_code": _STATUS.get(span.status.code, "unset"),
            "status_message": span.status.message,
            "resource_attributes": [(k, as_text(v)) for k, v in resource.items()],
        }

    def span_row(self, project: str, span: Span, resource: Attrs, scope: str, attrs: Attrs) -> dict:
        row = self.common(project, span, resource)
        row["kind"] = _KINDS.get(span.kind, "unspecified")
        row["scope_name"] = scope
        row["attributes"] = [(k, as_text(v)) for k, v in attrs.items()]
        row["events"] = _dump(
            [
                {
                    "name": e.name,
                    "time_unix_nano": e.time_unix_nano,
                    "attributes": attributes(e.attributes),
                }
                for e in span.events
            ]
        )
        row["links"] = _dump(
            [
                {
                    "trace_id": link.trace_id.hex(),
                    "span_id": link.span_id.hex(),
                    "attributes": attributes(link.attributes),
                }
                for link in span.links
            ]
        )
        return row

    def llm_row(self, project: str, span: Span, resource: Attrs, attrs: Attrs) -> dict:
        row = self.common(project, span, resource)
        attrs = _with_content_events(span, attrs)
        request_model = _first_text(attrs, "gen_ai.request.model", "llm.model_name")
        response_model = (
            _first_text(attrs, "gen_ai.response.model", "llm.model_name") or request_model
        )
        input_json, input_messages = _input_messages(attrs)
        output_json, output_messages = _output_messages(attrs)
        input_tokens = _first_int(
            attrs,
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        )
        output_tokens = _first_int(
            attrs,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        )
        total = _first_int(attrs, "llm.token_count.total", "llm.usage.total_tokens")
        explicit_cost = _first(attrs, "gen_ai.usage.cost", "llm.cost.total")
        row.update(
            operation=_operation(attrs),
            provider=_first_text(
                attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"
            ),
            request_model=request_model,
            response_model=response_model,
            input_messages=input_json,
            output_messages=output_json,
            input_text=_messages_text(input_messages, skip_roles=("system",)),
            output_text=_messages_text(output_messages),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=min(total or input_tokens + output_tokens, _MAX_U32),
            cost_usd=(
                float(explicit_cost)
                if isinstance(explicit_cost, int | float)
                else self._prices.cost(response_model, input_tokens, output_tokens)
            ),
            finish_reasons=_finish_reasons(attrs, output_messages),
            error_type=_error_type(span, attrs),
            conversation_id=_first_text(attrs, "gen_ai.conversation.id", "session.id"),
            user_id=_first_text(attrs, "user.id", "enduser.id"),
            agent_name=_first_text(attrs, "gen_ai.agent.name", "agent.name"),
            attributes=[
                (k, as_text(v))
                for k, v in attrs.items()
                if k not in _BODY_KEYS and not _INDEXED_BODY.match(k)
            ],
        )
        return row


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode() if value else ""


def _first(attrs: Attrs, *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _first_text(attrs: Attrs, *keys: str) -> str:
    value = _first(attrs, *keys)
    return "" if value is None else as_text(value)


def _first_int(attrs: Attrs, *keys: str) -> int:
    value = _first(attrs, *keys)
    try:
        number = int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0
    return min(max(number, 0), _MAX_U32)


def _operation(attrs: Attrs) -> str:
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation:
        return operation
    legacy = attrs.get("llm.request.type")
    if isinstance(legacy, str) and legacy in _LEGACY_REQUEST_TYPES:
        return _LEGACY_REQUEST_TYPES[legacy]
    return _OPENINFERENCE_OPERATIONS.get(str(attrs.get("openinference.span.kind", "")), "chat")


def _error_type(span: Span, attrs: Attrs) -> str:
    explicit = _first_text(attrs, "error.type")
    if explicit or span.status.code != Status.STATUS_CODE_ERROR:
        return explicit
    for event in span.events:
        if event.name == "exception":
            found = attributes(event.attributes).get("exception.type")
            if found:
                return as_text(found)
    return "_OTHER"


def _with_content_events(span: Span, attrs: Attrs) -> Attrs:
    """Fold GenAI content carried on span events into the attributes the mapping reads."""
    if not span.events:
        return attrs
    merged = dict(attrs)
    event_messages: list[Message] = []
    for event in span.events:
        name = event.name
        if name in (
            "gen_ai.content.prompt",
            "gen_ai.content.completion",
            "gen_ai.client.inference.operation.details",
        ):
            for key, value in attributes(event.attributes).items():
                merged.setdefault(key, value)
        elif name in ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message"):
            body = attributes(event.attributes)
            role = name.split(".")[1]
            event_messages.append({"role": role, "content": body.get("content", "")})
        elif name == "gen_ai.choice":
            body = attributes(event.attributes)
            message = body.get("message")
            if isinstance(message, dict):
                merged.setdefault("_choices", []).append(
                    {**message, "finish_reason": body.get("finish_reason", "")}
                )
    if event_messages:
        merged.setdefault("gen_ai.input.messages", event_messages)
    if "_choices" in merged:
        merged.setdefault("gen_ai.output.messages", merged.pop("_choices"))
    return merged


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("[", "{"):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
    return value


def _normalise(messages: Any, default_role: str) -> list[Message]:
    """Messages in the current convention's shape: {role, parts: [{type, content}], ...}."""
    if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
        messages = messages["messages"]
    if isinstance(messages, str):
        return [{"role": default_role, "parts": [{"type": "text", "content": messages}]}]
    if not isinstance(messages, list):
        return []
    normalised: list[Message] = []
    for message in messages:
        if isinstance(message, str):
            normalised.append(
                {"role": default_role, "parts": [{"type": "text", "content": message}]}
            )
            continue
        if not isinstance(message, dict):
            continue
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
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
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
    return [{"type": "text", "content": as_text(content)}]


def _indexed(attrs: Attrs, pattern: str, fields: tuple[str, ...]) -> list[Message]:
    """Collect OpenLLMetry / OpenInference flattened messages: prefix.N.field."""
    found: dict[int, Message] = {}
    for index in range(10_000):
        keys = {field: pattern.format(index, field) for field in fields}
        if not any(key in attrs for key in keys.values()):
            break
        found[index] = {field: attrs[key] for field, key in keys.items() if key in attrs}
    return [found[i] for i in sorted(found)]


def _input_messages(attrs: Attrs) -> tuple[str, list[Message]]:
    """The input conversation as (JSON text, parsed messages)."""
    raw = attrs.get("gen_ai.input.messages")
    if raw is not None:
        messages = _normalise(_parse_json(raw), "user")
        system = _normalise(_parse_json(attrs.get("gen_ai.system_instructions")), "system")
        if not system and isinstance(raw, str) and messages and "parts" in messages[0]:
            return raw, messages  # already canonical: store the client's bytes as they came
        messages = [{"role": "system", "parts": m["parts"]} for m in system] + messages
        return _dump(messages), messages
    for source in (
        attrs.get("gen_ai.prompt"),
        _indexed(attrs, "gen_ai.prompt.{}.{}", ("role", "content")),
        _indexed(attrs, "llm.input_messages.{}.message.{}", ("role", "content")),
        attrs.get("input.value"),
    ):
        if source:
            messages = _normalise(_parse_json(source), "user")
            return _dump(messages), messages
    return "", []


def _output_messages(attrs: Attrs) -> tuple[str, list[Message]]:
    raw = attrs.get("gen_ai.output.messages")
    if raw is not None:
        messages = _normalise(_parse_json(raw), "assistant")
        if isinstance(raw, str) and messages and "parts" in messages[0]:
            return raw, messages
        return _dump(messages), messages
    for source in (
        attrs.get("gen_ai.completion"),
        _indexed(attrs, "gen_ai.completion.{}.{}", ("role", "content", "finish_reason")),
        _indexed(attrs, "llm.output_messages.{}.message.{}", ("role", "content")),
        attrs.get("output.value"),
    ):
        if source:
            messages = _normalise(_parse_json(source), "assistant")
            return _dump(messages), messages
    return "", []


def _messages_text(messages: list[Message], skip_roles: tuple[str, ...] = ()) -> str:
    texts = []
    for message in messages:
        if message.get("role") in skip_roles:
            continue
        for part in message.get("parts", ()):
            if isinstance(part, dict) and part.get("type") == "text":
                content = part.get("content")
                if isinstance(content, str) and content:
                    texts.append(content)
    return "\n".join(texts)


def _finish_reasons(attrs: Attrs, output: list[Message]) -> list[str]:
    explicit = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(explicit, list):
        return [as_text(r) for r in explicit]
    if isinstance(explicit, str) and explicit:
        parsed = _parse_json(explicit)
        return [as_text(r) for r in parsed] if isinstance(parsed, list) else [explicit]
    return [as_text(m["finish_reason"]) for m in output if m.get("finish_reason")]
