"""TRL preference rows (`prompt`/`chosen`/`rejected`, explicit prompt), the `dpo` and `reward`
formats: DPOTrainer and RewardTrainer read the same rows. Plain mode hands over prompt and
response texts as stored, with no separator or template."""

from __future__ import annotations

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.pairs import pair_candidates
from driftline.finetune.dataset.reader import Call, Calls, Feedback
from driftline.finetune.dataset.rows import Candidate, Row, Tally, prompt_of, response_of


def preference_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally
) -> list[Candidate]:
    """A TRL preference row per usable pair."""
    return pair_candidates(feedback, calls, filters, tally, preference_row)


def preference_row(call: Call, chosen: str, rejected: str, filters: ExportFilters) -> Row:
    """A TRL preference row: messages (conversational) or texts (plain)."""
    return {
        "prompt": prompt_of(call, filters),
        "chosen": response_of(chosen, filters),
        "rejected": response_of(rejected, filters),
    }
