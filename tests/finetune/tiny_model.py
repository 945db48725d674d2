"""The tests' tiny causal LM and word-level tokenizer: the demo's (nothing is downloaded), with a
vocabulary of every word in the dataset rows a test trains on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from driftline.demo import tiny_model as demo


def texts_of(value: Any) -> Iterable[str]:
    """Every string inside a dataset row (strings, message lists, nested dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts_of(item)


def tokenizer_for(rows: list[dict[str, Any]]) -> Any:
    """A word-level tokenizer whose vocabulary is every word in the rows, with a chat template."""
    return demo.tokenizer(texts_of(rows))


def tiny_model(vocab_size: int) -> Any:
    """A 2-layer Llama with hidden size 32, randomly initialised."""
    return demo.model(vocab_size)
