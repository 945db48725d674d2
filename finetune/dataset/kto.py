"""TRL unpaired preference rows (`prompt`/`completion`/`label`), the `kto` format: thumbs,
mean scores past the filters' thresholds, and corrections (the correction good, the answer
bad); a (prompt, completion) labelled both ways is left out."""

from __future__ import annotations

from collections import defaultdict

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.reader import Call, Calls, Feedback
from driftline.finetune.dataset.rows import Candidate, Tally, identity, prompt_of, response_of


def kto_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally
) -> list[Candidate]:
    """KTO rows: thumbs, mean scores by the thresholds, and corrections."""
    labelled: list[tuple[tuple[int, int], Call, str, bool, str]] = []
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    first: dict[tuple[str, str], tuple[int, Call]] = {}
    for fb in feedback:
        if fb.kind not in ("boolean", "numeric", "correction"):
            tally.skipped[f"unused_{fb.kind or 'unknown'}"] += 1
            continue
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None:
            tally.skipped["call_not_found"] += 1
        elif fb.number is None and fb.kind != "correction":
            tally.skipped["no_value"] += 1
        elif fb.kind == "boolean":
            labelled.append(((fb.index, 0), call, call.output, bool(fb.number), "boolean"))
        elif fb.kind == "numeric":
            assert fb.number is not None
            scores[call.key].append(fb.number)
            first.setdefault(call.key, (fb.index, call))
        elif fb.text == call.output:
            tally.skipped["same_response"] += 1
        else:
            labelled.append(((fb.index, 0), call, fb.text, True, "correction"))
            labelled.append(((fb.index, 1), call, call.output, False, "correction"))
    for key, values in scores.items():
        index, call = first[key]
        mean = sum(values) / len(values)
        if mean >= filters.kto_good or mean <= filters.kto_bad:
            labelled.append(((index, 0), call, call.output, mean >= filters.kto_good, "numeric"))
        else:
            tally.skipped["between_thresholds"] += 1
    out = []
    for order, call, completion, label, source in labelled:
        prompt = prompt_of(call, filters)
        if not prompt:
            tally.skipped["empty_prompt"] += 1
        elif not completion.strip():
            tally.skipped["empty_response"] += 1
        else:
            row = {"prompt": prompt, "completion": response_of(completion, filters), "label": label}
            out.append(Candidate(order, call, row, source, identity(row)))
    return out


def drop_conflicts(candidates: list[Candidate], tally: Tally) -> list[Candidate]:
    """Leave out every (prompt, completion) that is labelled both good and bad."""
    labels: dict[str, set[bool]] = defaultdict(set)
    for c in candidates:
        labels[identity(c.row["prompt"], c.row["completion"])].add(c.row["label"])
    conflicted = {key for key, seen in labels.items() if len(seen) > 1}
    tally.skipped["conflict"] += len(conflicted)
    return [
        c for c in candidates if identity(c.row["prompt"], c.row["completion"]) not in conflicted
    ]
