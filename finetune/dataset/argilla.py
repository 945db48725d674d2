"""Argilla 2.x records, the `argilla` format: `rg.Record.to_dict()`-shaped, one per judged call
(`rg.Record.from_dict` reads a line). Fields `prompt` (ChatField messages, or text) and
`response`; one question per feedback name (lowercased, other characters as `_`):
RatingQuestion for scores, LabelQuestion for thumbs (`"true"`/`"false"`) and labels,
TextQuestion for corrections, SpanQuestion (on `response`) for spans. Argilla wants user UUIDs:
a reviewer's is uuid5 of their name."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.judgements import (
    answer_value,
    call_metadata,
    judged_calls,
    latest_judgements,
    question_name,
    reviewer_of,
)
from driftline.finetune.dataset.reader import Calls, Feedback
from driftline.finetune.dataset.rows import Candidate, Row, Tally, prompt_of

_REVIEWER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://driftline.dev/reviewers")


def argilla_candidates(
    feedback: list[Feedback], calls: Calls, filters: ExportFilters, tally: Tally
) -> list[Candidate]:
    """Argilla 2.x records (`rg.Record.to_dict` shape), one per judged call."""
    out = []
    for call, judged in judged_calls(feedback, calls, tally, "argilla"):
        responses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fb in latest_judgements(judged, tally):
            tally.sources[fb.kind] += 1
            reviewer = str(uuid.uuid5(_REVIEWER_NAMESPACE, reviewer_of(fb)))
            responses[question_name(fb.name)].append(
                {"value": answer_value(fb), "user_id": reviewer, "status": "submitted"}
            )
        row: Row = {
            "id": "-".join(call.key),
            "fields": {"prompt": prompt_of(call, filters), "response": call.output},
            "metadata": call_metadata(call),
            "suggestions": {},
            "responses": dict(responses),
            "vectors": {},
        }
        out.append(Candidate((judged[0].index, 0), call, row, "", "-".join(call.key)))
    return out
