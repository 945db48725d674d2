"""What every client wrapper shares: one span per LLM call, and streams that end it.

A provider module supplies the request attributes and a `Recorder` that reads the response
(or its stream chunks). Every hook runs inside a guard: a failure in driftline's code is
swallowed, the client's result and exceptions reach the app unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from driftline.sdk import attributes as attr
from driftline.sdk import client
from driftline.sdk.observe import current_agent, record_error
from driftline.sdk.serialize import truncate

Message = dict[str, Any]
_REQUEST_PARAMS = {
    "temperature": attr.REQUEST_TEMPERATURE,
    "top_p": attr.REQUEST_TOP_P,
    "top_k": "gen_ai.request.top_k",
    "max_tokens": attr.REQUEST_MAX_TOKENS,
    "max_completion_tokens": attr.REQUEST_MAX_TOKENS,
    "max_output_tokens": attr.REQUEST_MAX_TOKENS,
}


class Recorder:
    """Collects what one call's response says; a provider subclasses `response` and `chunk`."""

    def __init__(self, span: Span, started: float) -> None:
        self.span = span
        self.started = started
        self.first_chunk_at: float | None = None
        self._ended = False

    def response(self, response: Any) -> None:
        """Read a whole (non-streamed) response."""

    def chunk(self, chunk: Any) -> None:
        """Read one stream chunk or event."""

    def finish(self) -> None:
        """Set what the stream chunks added up to, before the span ends."""

    def first_token(self) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
            self.span.set_attribute(attr.TIME_TO_FIRST_TOKEN, self.first_chunk_at - self.started)

    def end(self, error: BaseException | None = None, closed_early: bool = False) -> None:
        """End the span once, whatever path gets here first."""
        if self._ended:
            return
        self._ended = True
        try:
            self.finish()
            if closed_early:
                self.span.set_attribute("driftline.stream.closed_early", True)
            if error is not None:
                record_error(self.span, error)
        except Exception:
            pass
        finally:
            self.span.end()

    def safe(self, hook: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(Exception):
            hook(*args)


def server_attributes(client: Any) -> dict[str, Any]:
    """`server.address` and `server.port` of the client's base URL."""
    url = getattr(client, "base_url", None)
    host, port = getattr(url, "host", None), getattr(url, "port", None)
    found: dict[str, Any] = {}
    if host:
        found["server.address"] = str(host)
    if port:
        found["server.port"] = int(port)
    return found


def request_attributes(
    provider: str, server: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """GenAI request attributes from a create call's keyword arguments."""
    request: dict[str, Any] = {attr.PROVIDER: provider, **server}
    model = kwargs.get("model")
    if isinstance(model, str):
        request[attr.REQUEST_MODEL] = model
    for key, name in _REQUEST_PARAMS.items():
        value = kwargs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            request[name] = value
    if kwargs.get("stream") is True:
        request[attr.REQUEST_STREAM] = True
    return request


def set_json(span: Span, key: str, value: Any) -> None:
    """Set a content attribute as JSON, capped, and only when content capture is on."""
    active = client._active
    if active is None or not active.config.capture_content or not value:
        return
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    span.set_attribute(key, truncate(text, active.config.max_attribute_chars))


def set_usage(span: Span, input_tokens: int | None, output_tokens: int | None) -> None:
    if input_tokens is not None:
        span.set_attribute(attr.INPUT_TOKENS, input_tokens)
    if output_tokens is not None:
        span.set_attribute(attr.OUTPUT_TOKENS, output_tokens)


def set_output(span: Span, messages: list[Message], finish_reasons: list[Any]) -> None:
    reasons = [str(r) for r in finish_reasons if r]
    if reasons:
        span.set_attribute(attr.FINISH_REASONS, reasons)
    set_json(span, attr.OUTPUT_MESSAGES, messages)


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_result(call_id: Any, response: Any) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def text_parts(content: Any) -> list[dict[str, Any]]:
    """Message content (a string or a list of typed parts) as GenAI parts; media by type only."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts = []
    for part in content if isinstance(content, list) else [content]:
        item = part if isinstance(part, dict) else _as_dict(part)
        text = item.get("text")
        if isinstance(text, str):
            parts.append({"type": "text", "content": text})
        elif isinstance(item.get("refusal"), str):
            parts.append({"type": "text", "content": item["refusal"]})
        else:
            parts.append({"type": str(item.get("type", "unknown"))})
    return parts


def _as_dict(value: Any) -> dict[str, Any]:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        result = dump()
        if isinstance(result, dict):
            return result
    return {"type": type(value).__name__}


class Call:
    """Start a CLIENT span for one LLM request and end it from its outcome."""

    def __init__(self, tracer: trace.Tracer, operation: str, request: dict[str, Any]) -> None:
        model = request.get(attr.REQUEST_MODEL)
        name = f"{operation} {model}" if model else operation
        agent = current_agent.get()
        if agent is not None:
            request[attr.AGENT_NAME] = agent
        request[attr.OPERATION] = operation
        self.span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=request)
        self.started = time.monotonic()
        self.token: Any = otel_context.attach(trace.set_span_in_context(self.span))

    def detach(self) -> None:
        if self.token is not None:
            otel_context.detach(self.token)
            self.token = None


def traced(
    original: Callable[..., Any],
    start: Callable[[trace.Tracer, dict[str, Any]], tuple[Call, Recorder]],
    stream_of: Callable[[Any, Recorder], Any],
) -> Callable[..., Any]:
    """A sync client method that records one span per call, its stream included."""

    @functools.wraps(original)
    def method(*args: Any, **kwargs: Any) -> Any:
        active = client._active
        begun = _begin(active, start, kwargs)
        if begun is None:
            return original(*args, **kwargs)
        call, recorder = begun
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            call.detach()
            recorder.end(exc)
            raise
        call.detach()
        return _outcome(result, recorder, stream_of)

    return method


def traced_async(
    original: Callable[..., Any],
    start: Callable[[trace.Tracer, dict[str, Any]], tuple[Call, Recorder]],
    stream_of: Callable[[Any, Recorder], Any],
) -> Callable[..., Any]:
    """The async twin of `traced`."""

    @functools.wraps(original)
    async def method(*args: Any, **kwargs: Any) -> Any:
        active = client._active
        begun = _begin(active, start, kwargs)
        if begun is None:
            return await original(*args, **kwargs)
        call, recorder = begun
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            call.detach()
            recorder.end(exc)
            raise
        call.detach()
        return _outcome(result, recorder, stream_of)

    return method


def _begin(
    active: client.Active | None,
    start: Callable[[trace.Tracer, dict[str, Any]], tuple[Call, Recorder]],
    kwargs: dict[str, Any],
) -> tuple[Call, Recorder] | None:
    if active is None:
        return None
    try:
        return start(active.tracer, kwargs)
    except Exception:
        return None


def _outcome(result: Any, recorder: Recorder, stream_of: Callable[[Any, Recorder], Any]) -> Any:
    """The value to hand the app: a stream wrapped so it ends the span, else `result` itself."""
    try:
        wrapped = stream_of(result, recorder)
    except Exception:
        wrapped = None
    if wrapped is not None:
        return wrapped
    recorder.safe(recorder.response, result)
    recorder.end()
    return result


class StreamProxy:
    """Iterates the client's stream for the app, feeding each chunk to the recorder.

    The span ends when the stream is exhausted, fails, is closed, leaves its `with` block, or
    is garbage-collected after the app stopped reading early.
    """

    def __init__(self, stream: Any, recorder: Recorder) -> None:
        self._stream = stream
        self._recorder = recorder
        self._iterator: Iterator[Any] | None = None
        self._finalizer = weakref.finalize(self, recorder.end, None, True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._stream)
        try:
            item = next(self._iterator)
        except StopIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._recorder.safe(self._recorder.chunk, item)
        return item

    def __enter__(self) -> StreamProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._end(closed_early=True)

    def _end(self, error: BaseException | None = None, closed_early: bool = False) -> None:
        self._finalizer.detach()
        self._recorder.end(error, closed_early)


class AsyncStreamProxy:
    """The async twin of `StreamProxy`."""

    def __init__(self, stream: Any, recorder: Recorder) -> None:
        self._stream = stream
        self._recorder = recorder
        self._iterator: Any = None
        self._finalizer = weakref.finalize(self, recorder.end, None, True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        try:
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._recorder.safe(self._recorder.chunk, item)
        return item

    async def __aenter__(self) -> AsyncStreamProxy:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._end(closed_early=True)

    def _end(self, error: BaseException | None = None, closed_early: bool = False) -> None:
        self._finalizer.detach()
        self._recorder.end(error, closed_early)
