"""Rows as every format builds them: candidates before dedupe and split, the tally of what a
build read, made and left out, and the prompt and response shapes TRL takes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.reader import Call, Calls, Feedback, Message

Row = dict[str, Any]


@dataclass
class Tally:
    """What a build read, made and left out."""

    feedback: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Candidate:
    """A row before dedupe and split, with where it came from."""

    order: tuple[int, int]
    call: Call
    row: Row
    source: str
    identity: str  # rows with the same identity are duplicates


# A format's rows from the feedback (oldest first) and the calls it names.
Builder = Callable[[list[Feedback], Calls, ExportFilters, Tally], list[Candidate]]


def prompt_of(call: Call, filters: ExportFilters) -> list[Message] | str:
    """The prompt as TRL takes it: messages (conversational) or text (plain)."""
    return call.messages if filters.conversational else call.plain


def response_of(text: str, filters: ExportFilters) -> list[Message] | str:
    """A response as TRL takes it: one assistant message, or the text."""
    return [{"role": "assistant", "content": text}] if filters.conversational else text


def identity(*parts: Any) -> str:
    """A canonical JSON key for dedupe."""
    return json.dumps(parts, ensure_ascii=False, sort_keys=True)
