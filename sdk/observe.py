"""`@observe`: one span per call of a function (sync, async, generator or async generator).

Before `init` (or after `shutdown`) a decorated function runs as if undecorated. Whatever goes
wrong inside the SDK is swallowed; the function's result and exceptions reach the caller as
they would without the decorator.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Literal, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from driftline.sdk import attributes as attr
from driftline.sdk import client
from driftline.sdk.serialize import to_text

ObservationType = Literal["llm", "chain", "tool", "agent", "retrieval", "embedding"]
F = TypeVar("F", bound=Callable[..., Any])

_TYPES: dict[str, dict[str, str]] = {
    "llm": {attr.OPERATION: "chat"},
    "chain": {},
    "tool": {attr.OPERATION: "execute_tool"},
    "agent": {attr.OPERATION: "invoke_agent"},
    "retrieval": {},
    "embedding": {attr.OPERATION: "embeddings"},
}
_MAX_STREAM_ITEMS = 1000
# The innermost agent around the current call, so LLM calls inside it carry its name.
current_agent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "driftline_agent", default=None
)


@overload
def observe(func: F, /) -> F: ...


@overload
def observe(
    func: None = None,
    /,
    *,
    name: str | None = None,
    as_type: ObservationType = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[[F], F]: ...


def observe(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    as_type: ObservationType = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
) -> F | Callable[[F], F]:
    """Record each call of the decorated function as a span; nested calls form one trace."""
    if as_type not in _TYPES:
        raise ValueError(f"as_type must be one of {', '.join(_TYPES)}, got {as_type!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@observe decorates functions, got {type(fn).__name__}")
        step = _Step(fn, name, as_type, capture_input, capture_output)
        return cast(F, functools.wraps(fn)(step.wrapper()))

    return decorate(func) if func is not None else decorate


class _Step:
    """What one decorated function records, and how it starts and ends its spans."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None,
        as_type: str,
        capture_input: bool,
        capture_output: bool,
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.agent = self.name if as_type == "agent" else None
        self.attributes = {attr.OBSERVATION_TYPE: as_type, **_TYPES[as_type]}
        if as_type == "agent":
            self.attributes[attr.AGENT_NAME] = self.name
        elif as_type == "tool":
            self.attributes[attr.TOOL_NAME] = self.name
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.params, self.skip_first = _parameters(fn)

    def wrapper(self) -> Callable[..., Any]:
        """A plain function of the same kind as the decorated one (so methods still bind)."""
        if inspect.isasyncgenfunction(self.fn):
            return _async_generator(self)
        if inspect.iscoroutinefunction(self.fn):
            return _coroutine(self)
        if inspect.isgeneratorfunction(self.fn):
            return _generator(self)
        return _call(self)

    # -- span lifecycle; none of these raise ---------------------------------------------------

    def _open(
        self, active: client.Active, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Span | None:
        try:
            attributes = self.attributes
            config = active.config
            if self.capture_input and config.capture_content:
                # Given at start, the input costs no set_attribute (and its lock) per call.
                text = to_text(self._inputs(args, kwargs), config.max_attribute_chars)
                attributes = {**attributes, attr.INPUT_VALUE: text}
            return active.tracer.start_span(self.name, attributes=attributes)
        except Exception:
            return None

    def _finish(
        self, span: Span | None, token: Any, result: Any, closed_early: bool = False
    ) -> None:
        _detach(token)
        if span is None:
            return
        try:
            active = client._active
            if (
                self.capture_output
                and active is not None
                and active.config.capture_content
                and span.is_recording()
            ):
                span.set_attribute(
                    attr.OUTPUT_VALUE, to_text(result, active.config.max_attribute_chars)
                )
            if closed_early:
                span.set_attribute("driftline.stream.closed_early", True)
            span.end()
        except Exception:
            pass

    def _fail(self, span: Span | None, token: Any, exc: BaseException) -> None:
        _detach(token)
        if span is None:
            return
        try:
            record_error(span, exc)
            span.end()
        except Exception:
            pass

    def _inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's arguments by name; a single argument as itself."""
        if self.skip_first:
            args = args[1:]
        if len(args) + len(kwargs) == 1:
            return args[0] if args else next(iter(kwargs.values()))
        named = dict(zip(self.params, args, strict=False))
        if len(args) > len(self.params):
            named["*args"] = args[len(self.params) :]
        named.update(kwargs)
        return named


# -- the four shapes of function; each closes over its step ------------------------------------


def _call(step: _Step) -> Callable[..., Any]:
    fn = step.fn

    def call(*args: Any, **kwargs: Any) -> Any:
        active = client._active
        if active is None:
            return fn(*args, **kwargs)
        span = step._open(active, args, kwargs)
        token = _attach(span, step.agent)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            step._fail(span, token, exc)
            raise
        step._finish(span, token, result)
        return result

    return call


def _coroutine(step: _Step) -> Callable[..., Any]:
    fn = step.fn

    async def coroutine(*args: Any, **kwargs: Any) -> Any:
        active = client._active
        if active is None:
            return await fn(*args, **kwargs)
        span = step._open(active, args, kwargs)
        token = _attach(span, step.agent)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            step._fail(span, token, exc)
            raise
        step._finish(span, token, result)
        return result

    return coroutine


def _generator(step: _Step) -> Callable[..., Any]:
    """The span is current only while the inner generator runs, not while the caller does."""
    fn = step.fn

    def generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        inner = fn(*args, **kwargs)
        active = client._active
        span = step._open(active, args, kwargs) if active is not None else None
        if span is None:
            return (yield from inner)
        items: list[Any] = []
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = _attach(span, step.agent)
            try:
                item = inner.throw(thrown) if thrown is not None else inner.send(sent)
            except StopIteration as stop:
                step._finish(span, token, _joined(items))
                return stop.value
            except BaseException as exc:
                step._fail(span, token, exc)
                raise
            _detach(token)
            thrown = None
            _collect(items, item)
            try:
                sent = yield item
            except GeneratorExit:
                inner.close()
                step._finish(span, None, _joined(items), closed_early=True)
                raise
            except BaseException as exc:
                thrown = exc

    return generator


def _async_generator(step: _Step) -> Callable[..., Any]:
    fn = step.fn

    async def async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        inner = fn(*args, **kwargs)
        active = client._active
        span = step._open(active, args, kwargs) if active is not None else None
        if span is None:
            async for item in inner:
                yield item
            return
        items: list[Any] = []
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = _attach(span, step.agent)
            try:
                item = await (inner.athrow(thrown) if thrown is not None else inner.asend(sent))
            except StopAsyncIteration:
                step._finish(span, token, _joined(items))
                return
            except BaseException as exc:
                step._fail(span, token, exc)
                raise
            _detach(token)
            thrown = None
            _collect(items, item)
            try:
                sent = yield item
            except GeneratorExit:
                await inner.aclose()
                step._finish(span, None, _joined(items), closed_early=True)
                raise
            except BaseException as exc:
                thrown = exc

    return async_generator


def record_error(span: Span, exc: BaseException) -> None:
    """Mark `span` failed by `exc` the way the GenAI conventions ask (error.type, status, event)."""
    kind = type(exc)
    span.set_attribute(attr.ERROR_TYPE, f"{kind.__module__.split('.')[0]}.{kind.__qualname__}")
    span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {exc}"[:1000]))
    span.record_exception(exc)


def _parameters(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """Names of the positional parameters, and whether the first is self/cls (not recorded)."""
    try:
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return [], False
    skip = bool(params) and params[0] in ("self", "cls")
    return (params[1:] if skip else params), skip


def _attach(span: Span | None, agent: str | None = None) -> Any:
    if span is None:
        return None
    try:
        token = otel_context.attach(trace.set_span_in_context(span))
        return token if agent is None else (token, current_agent.set(agent))
    except Exception:
        return None


def _detach(token: Any) -> None:
    if token is None:
        return
    try:
        if isinstance(token, tuple):
            otel_token, agent_token = token
            current_agent.reset(agent_token)
            otel_context.detach(otel_token)
        else:
            otel_context.detach(token)
    except Exception:
        pass


def _collect(items: list[Any], item: Any) -> None:
    if len(items) < _MAX_STREAM_ITEMS:
        items.append(item)


def _joined(result: Any) -> Any:
    """A generator's yielded text chunks as one string; anything else unchanged."""
    if type(result) is list and result and all(type(x) is str for x in result):
        return "".join(result)
    return result
