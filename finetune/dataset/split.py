"""The split by conversation: a call goes to the test split when
`in_test(project, conversation_id or trace_id, test_fraction)`; and the people's scores of the
held-out calls, what an LLM judge must agree with to be trusted."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.reader import Call, read_calls, read_feedback, trusted
from driftline.finetune.dataset.rows import Candidate, Row
from driftline.store import Store


def in_test(project: str, key: str, fraction: float) -> bool:
    """Whether a conversation (or trace) is held out: blake2b of `project NUL key`, as a
    fraction of 2**64, below `fraction`."""
    digest = hashlib.blake2b(f"{project}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_rows(
    project: str, candidates: list[Candidate], fraction: float
) -> tuple[list[Row], list[Row]]:
    """(train rows, test rows), each in the candidates' order."""
    train: list[Row] = []
    test: list[Row] = []
    for c in candidates:
        (test if in_test(project, c.call.split_key, fraction) else train).append(c.row)
    return train, test


def held_out_scores(
    store: Store, filters: ExportFilters
) -> list[tuple[str, str, dict[str, float]]]:
    """(prompt, response, mean score per criterion) of every held-out call that people scored,
    read with a snapshot's filters: what an LLM judge must agree with to be trusted."""
    filters = filters.resolved()
    # People's scores only, whatever the export read: an app's scores are not what a judge
    # must agree with to be trusted.
    reviewed = trusted(read_feedback(store, filters), app_feedback=False)
    feedback = [fb for fb in reviewed if fb.kind == "numeric"]
    calls = read_calls(store, filters.project, feedback)
    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    found: dict[tuple[str, str], Call] = {}
    for fb in feedback:
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None or fb.number is None:
            continue
        if in_test(filters.project, call.split_key, filters.test_fraction):
            scores[call.key][fb.name].append(fb.number)
            found[call.key] = call
    return [
        (
            found[key].plain,
            found[key].output,
            {name: sum(values) / len(values) for name, values in sorted(by_name.items())},
        )
        for key, by_name in scores.items()
    ]
