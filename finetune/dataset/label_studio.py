"""Label Studio tasks, the `label-studio` format: `data` {prompt, response, ids; `messages` as
Paragraphs items when conversational} and one annotation per reviewer whose results target
`response`."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.judgements import (
    answer_value,
    call_metadata,
    judged_calls,
    latest_judgements,
    question_name,
    rating,
    reviewer_of,
    span_marks,
)
from driftline.finetune.dataset.reader import Calls, Feedback
from driftline.finetune.dataset.rows import Candidate, Tally


def label_studio_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally
) -> list[Candidate]:
    """Label Studio tasks, one per judged call, an annotation per reviewer."""
    out = []
    for call, judged in judged_calls(feedback, calls, tally, "label-studio"):
        by_reviewer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fb in latest_judgements(judged, tally):
            tally.sources[fb.kind] += 1
            by_reviewer[reviewer_of(fb)].extend(_results(fb, call.output))
        data: dict[str, Any] = {"prompt": call.plain, "response": call.output}
        if filters.conversational:
            data["messages"] = [{"author": m["role"], "text": m["content"]} for m in call.messages]
        data.update(call_metadata(call))
        row = {"data": data, "annotations": [{"result": r} for r in by_reviewer.values()]}
        out.append(Candidate((judged[0].index, 0), call, row, "", "-".join(call.key)))
    return out


def _results(fb: Feedback, output: str) -> list[dict[str, Any]]:
    """Label Studio result items for one judgement of the response."""
    base = {"from_name": question_name(fb.name), "to_name": "response"}
    if fb.kind == "spans":
        return [
            {
                "id": _region_id(fb, i),
                **base,
                "type": "labels",
                "value": {
                    "start": m["start"],
                    "end": m["end"],
                    "text": output[m["start"] : m["end"]],
                    "labels": [m["label"]],
                },
            }
            for i, m in enumerate(span_marks(fb))
        ]
    value: dict[str, Any]
    if fb.kind == "numeric":
        kind, value = "rating", {"rating": rating(fb.number)}
    elif fb.kind == "correction":
        kind, value = "textarea", {"text": [fb.text]}
    else:
        kind, value = "choices", {"choices": [answer_value(fb)]}
    return [{"id": _region_id(fb, 0), **base, "type": kind, "value": value}]


def _region_id(fb: Feedback, index: int) -> str:
    """A stable 10-character Label Studio region id."""
    return hashlib.blake2b(f"{fb.id}:{index}".encode(), digest_size=5).hexdigest()
