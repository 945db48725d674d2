"""`wrap(client)`: record every call an OpenAI or Anthropic client makes as a GenAI span.

The client packages are never imported here; a client is recognised by its class's module.
"""

from __future__ import annotations

from typing import Any, TypeVar

from driftline.sdk.instrument import anthropic, openai

C = TypeVar("C")
_MARK = "_driftline_wrapped"


def wrap(client: C) -> C:
    """Instrument `client` in place and return it; wrapping twice changes nothing.

    Supports `openai.OpenAI`, `openai.AsyncOpenAI` (and their Azure variants),
    `anthropic.Anthropic` and `anthropic.AsyncAnthropic`. Copies made later with
    `client.with_options(...)` are not instrumented: wrap them too.
    """
    if getattr(client, _MARK, False):
        return client
    cls = type(client)
    package = cls.__module__.split(".")[0]
    is_async = any(base.__name__.startswith("Async") for base in cls.__mro__)
    providers: dict[str, Any] = {"openai": openai, "anthropic": anthropic}
    module = providers.get(package)
    if module is None:
        raise TypeError(
            f"driftline.sdk.wrap supports OpenAI and Anthropic clients, got {cls.__module__}."
            f"{cls.__qualname__}; use @observe(as_type='llm') for other clients"
        )
    module.instrument(client, is_async)
    setattr(client, _MARK, True)
    return client
