"""Anthropic client wrapper: `messages.create` (plain and streamed) and `messages.stream`."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from driftline.sdk import attributes as attr
from driftline.sdk import client as sdk_client
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


def instrument(client: Any, is_async: bool) -> None:
    """Patch this client instance's `messages.create` and `messages.stream`."""
    # The client's own spans would record every call a second time, without content.
    set_native = getattr(client, "_set_open_telemetry", None)
    if callable(set_native):
        set_native(False)
    server = server_attributes(client)
    proxy = AsyncStreamProxy if is_async else StreamProxy

    def start(tracer: trace.Tracer, kwargs: dict[str, Any]) -> tuple[Call, Recorder]:
        call = Call(tracer, "chat", request_attributes("anthropic", server, kwargs))
        set_json(call.span, attr.INPUT_MESSAGES, _input(kwargs.get("messages")))
        set_json(call.span, attr.SYSTEM_INSTRUCTIONS, text_parts(kwargs.get("system")))
        return call, MessagesRecorder(call.span, call.started)

    def stream_of(result: Any, recorder: Recorder) -> Any:
        return (
            proxy(result, recorder) if type(result).__name__ in ("Stream", "AsyncStream") else None
        )

    messages = client.messages
    wrap = traced_async if is_async else traced
    messages.create = wrap(messages.create, start, stream_of)
    stream_helper = messages.stream

    def stream(*args: Any, **kwargs: Any) -> Any:
        manager = stream_helper(*args, **kwargs)
        active = sdk_client._active
        if active is None:
            return manager
        return _Manager(manager, lambda: start(active.tracer, dict(kwargs)), proxy)

    messages.stream = stream


def _input(messages: Any) -> list[Message]:
    out: list[Message] = []
    for message in messages or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [content]
        parts: list[dict[str, Any]] = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(block, dict) and kind == "tool_use":
                parts.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
            elif isinstance(block, dict) and kind == "tool_result":
                parts.append(tool_result(block.get("tool_use_id"), block.get("content")))
            else:
                parts += text_parts(block)
        out.append({"role": str(message.get("role", "user")), "parts": parts})
    return out


class MessagesRecorder(Recorder):
    """Reads a Message, or the raw events of its stream."""

    def __init__(self, span: Any, started: float) -> None:
        super().__init__(span, started)
        self._text: list[str] = []
        self._stop: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._streamed = False

    def response(self, message: Any) -> None:
        self._meta(message)
        parts: list[dict[str, Any]] = []
        for block in message.content or ():
            if block.type == "text":
                parts.append({"type": "text", "content": block.text})
            elif block.type == "tool_use":
                parts.append(tool_call(block.id, block.name, block.input))
            else:
                parts.append({"type": block.type})
        set_usage(self.span, _input_tokens(message.usage), message.usage.output_tokens)
        reason = message.stop_reason
        set_output(
            self.span, [{"role": "assistant", "parts": parts, "finish_reason": reason}], [reason]
        )

    def chunk(self, event: Any) -> None:
        self._streamed = True
        kind = event.type
        if kind == "message_start":
            self._meta(event.message)
            self._input_tokens = _input_tokens(event.message.usage)
            self._output_tokens = event.message.usage.output_tokens
        elif kind == "content_block_delta":
            self.first_token()
            text = getattr(event.delta, "text", None)
            if text:
                self._text.append(text)
        elif kind == "message_delta":
            self._stop = event.delta.stop_reason or self._stop
            if event.usage is not None and event.usage.output_tokens is not None:
                self._output_tokens = event.usage.output_tokens

    def finish(self) -> None:
        if not self._streamed:
            return
        set_usage(self.span, self._input_tokens, self._output_tokens)
        parts = text_parts("".join(self._text))
        message = {"role": "assistant", "parts": parts, "finish_reason": self._stop}
        set_output(self.span, [message], [self._stop])

    def _meta(self, message: Any) -> None:
        if message.model:
            self.span.set_attribute(attr.RESPONSE_MODEL, message.model)
        if message.id:
            self.span.set_attribute(attr.RESPONSE_ID, message.id)


def _input_tokens(usage: Any) -> int | None:
    """All input tokens, cached ones included, as the GenAI conventions count them."""
    total = getattr(usage, "input_tokens", None)
    if total is None:
        return None
    for cached in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        total += getattr(usage, cached, None) or 0
    return int(total)


class _Manager:
    """Stands in for `messages.stream(...)`'s context manager; its stream's events end the span."""

    def __init__(self, manager: Any, start: Any, proxy: type) -> None:
        self._manager = manager
        self._start = start
        self._proxy = proxy
        self._recorder: Recorder | None = None

    def __enter__(self) -> Any:
        begun = self._begin()
        if begun is None:
            return self._manager.__enter__()
        call, recorder = begun
        try:
            stream = self._manager.__enter__()
        except BaseException as exc:
            recorder.end(exc)
            raise
        finally:
            call.detach()
        return self._watch(stream, recorder)

    def __exit__(self, *exc_info: Any) -> Any:
        return self._manager.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        begun = self._begin()
        if begun is None:
            return await self._manager.__aenter__()
        call, recorder = begun
        try:
            stream = await self._manager.__aenter__()
        except BaseException as exc:
            recorder.end(exc)
            raise
        finally:
            call.detach()
        return self._watch(stream, recorder)

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._manager.__aexit__(*exc_info)

    def _begin(self) -> tuple[Call, Recorder] | None:
        try:
            call, recorder = self._start()
            call.span.set_attribute(attr.REQUEST_STREAM, True)
            return call, recorder
        except Exception:
            return None

    def _watch(self, stream: Any, recorder: Recorder) -> Any:
        raw = getattr(stream, "_raw_stream", None)
        if raw is None:  # a client version we do not know: end the span now, without content
            recorder.end()
        else:  # the stream reads its events from here once the app starts iterating
            stream._raw_stream = self._proxy(raw, recorder)
        return stream
