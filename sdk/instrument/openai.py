"""OpenAI client wrapper: chat completions and responses, sync, async and streaming."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from driftline.sdk import attributes as attr
from driftline.sdk.instrument.common import (
    AsyncStreamProxy,
    Call,
    Message,
    Recorder,
    StreamProxy,
    request_attributes,
    server_attributes,
    set_json,
    set_output,
    set_usage,
    text_parts,
    tool_call,
    tool_result,
    traced,
    traced_async,
)

# Responses API end states as chat-style finish reasons, so detectors see one vocabulary.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def instrument(client: Any, is_async: bool) -> None:
    """Patch this client instance's `chat.completions.create` and `responses.create`."""
    provider = "azure.ai.openai" if "azure" in type(client).__name__.lower() else "openai"
    server = server_attributes(client)
    wrap = traced_async if is_async else traced
    proxy = AsyncStreamProxy if is_async else StreamProxy

    def stream_of(result: Any, recorder: Recorder) -> Any:
        return proxy(result, recorder) if _is_stream(result) else None

    def start_chat(tracer: trace.Tracer, kwargs: dict[str, Any]) -> tuple[Call, Recorder]:
        call = Call(tracer, "chat", request_attributes(provider, server, kwargs))
        messages = kwargs.get("messages")
        set_json(call.span, attr.INPUT_MESSAGES, _chat_input(messages))
        return call, ChatRecorder(call.span, call.started)

    def start_responses(tracer: trace.Tracer, kwargs: dict[str, Any]) -> tuple[Call, Recorder]:
        call = Call(tracer, "chat", request_attributes(provider, server, kwargs))
        set_json(call.span, attr.INPUT_MESSAGES, _responses_input(kwargs.get("input")))
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            set_json(call.span, attr.SYSTEM_INSTRUCTIONS, text_parts(instructions))
        return call, ResponsesRecorder(call.span, call.started)

    completions = client.chat.completions
    completions.create = wrap(completions.create, start_chat, stream_of)
    responses = getattr(client, "responses", None)
    if responses is not None:
        responses.create = wrap(responses.create, start_responses, stream_of)


def _is_stream(result: Any) -> bool:
    return type(result).__name__ in ("Stream", "AsyncStream")


def _chat_input(messages: Any) -> list[Message]:
    out: list[Message] = []
    for message in messages or ():
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user"))
        parts = text_parts(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(tool_call(call.get("id"), function.get("name"), function.get("arguments")))
        if role == "tool":
            parts = [tool_result(message.get("tool_call_id"), message.get("content"))]
        out.append({"role": "system" if role == "developer" else role, "parts": parts})
    return out


def _responses_input(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "user", "parts": text_parts(value)}]
    out: list[Message] = []
    for item in value or ():
        if isinstance(item, dict) and "role" in item:
            out.append({"role": str(item["role"]), "parts": text_parts(item.get("content"))})
    return out


class ChatRecorder(Recorder):
    def __init__(self, span: Any, started: float) -> None:
        super().__init__(span, started)
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str] = {}
        self._model: str | None = None
        self._usage: Any = None
        self._id: str | None = None

    def response(self, response: Any) -> None:
        self._meta(response)
        messages = []
        for choice in response.choices or ():
            message = choice.message
            parts = text_parts(message.content or getattr(message, "refusal", None))
            for call in getattr(message, "tool_calls", None) or ():
                function = getattr(call, "function", None)
                name, arguments = (
                    getattr(function, "name", None),
                    getattr(function, "arguments", None),
                )
                parts.append(tool_call(call.id, name, arguments))
            messages.append(
                {"role": "assistant", "parts": parts, "finish_reason": choice.finish_reason}
            )
        set_output(self.span, messages, [c.finish_reason for c in response.choices or ()])

    def chunk(self, chunk: Any) -> None:
        self._meta(chunk)
        for choice in chunk.choices or ():
            delta = choice.delta
            text = getattr(delta, "content", None) if delta is not None else None
            if text or (delta is not None and getattr(delta, "tool_calls", None)):
                self.first_token()
            if text:
                self._texts.setdefault(choice.index, []).append(text)
            if choice.finish_reason:
                self._finish[choice.index] = choice.finish_reason

    def finish(self) -> None:
        if self._usage is not None:
            set_usage(self.span, self._usage.prompt_tokens, self._usage.completion_tokens)
        if not self._texts and not self._finish:
            return
        indexes = sorted(set(self._texts) | set(self._finish))
        messages = [
            {
                "role": "assistant",
                "parts": text_parts("".join(self._texts.get(i, []))),
                "finish_reason": self._finish.get(i),
            }
            for i in indexes
        ]
        set_output(self.span, messages, [self._finish[i] for i in indexes if i in self._finish])

    def _meta(self, obj: Any) -> None:
        if obj.model and obj.model != self._model:
            self._model = obj.model
            self.span.set_attribute(attr.RESPONSE_MODEL, obj.model)
        if obj.id and obj.id != self._id:
            self._id = obj.id
            self.span.set_attribute(attr.RESPONSE_ID, obj.id)
        if getattr(obj, "usage", None) is not None:
            self._usage = obj.usage
            if type(obj).__name__ == "ChatCompletion":
                set_usage(self.span, obj.usage.prompt_tokens, obj.usage.completion_tokens)
                self._usage = None


class ResponsesRecorder(Recorder):
    def response(self, response: Any) -> None:
        if response.model:
            self.span.set_attribute(attr.RESPONSE_MODEL, response.model)
        if response.id:
            self.span.set_attribute(attr.RESPONSE_ID, response.id)
        if response.usage is not None:
            set_usage(self.span, response.usage.input_tokens, response.usage.output_tokens)
        reason = _responses_finish(response)
        parts: list[dict[str, Any]] = []
        for item in response.output or ():
            if item.type == "message":
                parts += text_parts(item.content)
            elif item.type == "function_call":
                parts.append(tool_call(item.call_id, item.name, item.arguments))
        set_output(
            self.span,
            [{"role": "assistant", "parts": parts, "finish_reason": reason}],
            [reason] if reason else [],
        )

    def chunk(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        if kind == "response.output_text.delta":
            self.first_token()
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.response(event.response)


def _responses_finish(response: Any) -> str | None:
    status = getattr(response, "status", None)
    if status == "completed":
        calls = any(item.type == "function_call" for item in response.output or ())
        return "tool_calls" if calls else "stop"
    if status == "incomplete":
        details = getattr(response, "incomplete_details", None)
        reason = getattr(details, "reason", None) or "incomplete"
        return _INCOMPLETE.get(reason, reason)
    return status
