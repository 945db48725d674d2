"""Cost per call from a table of common models' list prices, overridable in config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float


# List prices in USD per 1M tokens (standard tier, no caching discounts), checked 2026-11.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.0),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.0, 30.0),
    "gpt-4": Price(30.0, 60.0),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.0, 60.0),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.80, 4.0),
    "claude-3-opus": Price(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25),
    "gemini-2.5-pro": Price(1.25, 10.0),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-1.5-pro": Price(1.25, 5.0),
    "gemini-1.5-flash": Price(0.075, 0.30),
    "mistral-large": Price(2.0, 6.0),
    "mistral-small": Price(0.10, 0.30),
}


class PriceTable:
    """Finds a model's price by its longest known name prefix (`gpt-4o-2024-08-06` → `gpt-4o`).

    The prefix must end at `-`, `@` or `:`, so `gpt-4.5` is not priced as `gpt-4`.
    """

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **{k.lower(): v for k, v in (overrides or {}).items()}}
        self._names = sorted(self._prices, key=len, reverse=True)

    def lookup(self, model: str) -> Price | None:
        """The price of `model` (any `provider/` prefix ignored), or None when unknown."""
        name = model.lower().rsplit("/", 1)[-1]
        for known in self._names:
            if name == known or (name.startswith(known) and name[len(known)] in "-@:"):
                return self._prices[known]
        return None
