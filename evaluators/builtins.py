"""Built-in checks that cost nothing: each gives a call one boolean, True when the answer has
the problem the check is named for."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

# Openings of a refusal in the answer's first sentence (English): what the SDK's users' apps
# produce most when a model declines.
_REFUSAL = re.compile(
    r"^\W*(i\s*(?:'m| am)\s+(?:sorry|unable|not able)|i\s+(?:can(?:'|no)?t|cannot|won't|"
    r"will not|must decline)|sorry,?\s+(?:but\s+)?i|as an ai\b|unfortunately,?\s+i\s+(?:can|am))",
    re.I,
)


@dataclass(frozen=True)
class Answer:
    """What a built-in check reads of a call."""

    output_text: str
    finish_reasons: list[str]
    output_type: str  # gen_ai.output.type the app asked for ("json", "text", or "")


def refusal(answer: Answer) -> bool:
    """The answer declines to help."""
    return bool(_REFUSAL.search(answer.output_text[:300]))


def empty(answer: Answer) -> bool:
    """The answer is empty, or was cut off by the length limit."""
    return not answer.output_text.strip() or "length" in answer.finish_reasons


def invalid_json(answer: Answer) -> bool:
    """The app asked for JSON and the answer does not parse as JSON."""
    if answer.output_type != "json":
        return False
    try:
        json.loads(answer.output_text)
    except ValueError:
        return True
    return False


CHECKS: dict[str, Callable[[Answer], bool]] = {
    "refusal": refusal,
    "empty": empty,
    "json": invalid_json,
}
