"""OpenAI preference fine-tuning JSONL (`input`/`preferred_output`/`non_preferred_output`), the
`openai-dpo` format: always messages (OpenAI takes no plain prompts); `conversational` is
ignored."""

from __future__ import annotations

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.pairs import pair_candidates
from driftline.finetune.dataset.reader import Call, Calls, Feedback
from driftline.finetune.dataset.rows import Candidate, Row, Tally


def openai_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally
) -> list[Candidate]:
    """A line of OpenAI's preference file per usable pair."""
    return pair_candidates(feedback, calls, filters, tally, openai_row)


def openai_row(call: Call, chosen: str, rejected: str, filters: ExportFilters) -> Row:
    """One line of OpenAI's preference file (the filters do not shape it)."""
    return {
        "input": {"messages": call.messages},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }
