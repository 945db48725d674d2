"""Preference pairs from corrections (the correction over the answer) and pairwise choices:
what the TRL and OpenAI preference formats hold, each in its own row shape."""

from __future__ import annotations

from collections.abc import Callable

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.reader import Call, Calls, Feedback, pair_refs
from driftline.finetune.dataset.rows import Candidate, Row, Tally, identity, prompt_of

# A pair's row: (prompt call, chosen, rejected, filters) -> row.
RowOf = Callable[[Call, str, str, ExportFilters], Row]


def pair_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally, row_of: RowOf
) -> list[Candidate]:
    """A row per usable pair; pairs with an empty prompt or response, or two equal responses,
    are left out (and counted)."""
    out = []
    for order, call, chosen, rejected, source in _pairs(feedback, calls, tally):
        if not prompt_of(call, filters):
            tally.skipped["empty_prompt"] += 1
        elif not chosen.strip() or not rejected.strip():
            tally.skipped["empty_response"] += 1
        elif chosen == rejected:
            tally.skipped["same_response"] += 1
        else:
            row = row_of(call, chosen, rejected, filters)
            out.append(Candidate(order, call, row, source, identity(row)))
    return out


def _pairs(
    feedback: list[Feedback], calls: Calls, tally: Tally
) -> list[tuple[tuple[int, int], Call, str, str, str]]:
    """(order, prompt call, chosen, rejected, source) from corrections and pairwise choices."""
    pairs = []
    for fb in feedback:
        if fb.kind == "correction":
            call = calls.find(fb.trace_id, fb.span_id)
            if call is None:
                tally.skipped["call_not_found"] += 1
                continue
            pairs.append(((fb.index, 0), call, fb.text, call.output, "correction"))
        elif fb.kind == "pairwise":
            pair = _pairwise(fb, calls, tally)
            if pair is not None:
                pairs.append(((fb.index, 0), *pair, "pairwise"))
        elif fb.kind == "spans":
            tally.skipped["spans_without_pair"] += 1
        else:
            tally.skipped[f"unused_{fb.kind or 'unknown'}"] += 1
    return pairs


def _pairwise(fb: Feedback, calls: Calls, tally: Tally) -> tuple[Call, str, str] | None:
    """Call a (the prompt), the chosen and the rejected response of a pairwise choice."""
    if fb.text == "tie":
        tally.skipped["tie"] += 1
        return None
    if fb.text not in ("a", "b"):
        tally.skipped["invalid_choice"] += 1
        return None
    a, b = (calls.find(*ref) if any(ref) else None for ref in pair_refs(fb))
    if a is None or b is None:
        tally.skipped["call_not_found"] += 1
        return None
    chosen, rejected = (a, b) if fb.text == "a" else (b, a)
    return a, chosen.output, rejected.output
