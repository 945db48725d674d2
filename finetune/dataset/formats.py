"""The export formats, the module that builds each one's rows, and the build: feedback read up
to the cutoff becomes rows, in the order of the feedback that made them, deduplicated and split
by conversation, with counts of what was made and left out."""

from __future__ import annotations

from collections import Counter
from typing import Any

from driftline.finetune.dataset.argilla import argilla_candidates
from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.kto import drop_conflicts, kto_candidates
from driftline.finetune.dataset.label_studio import label_studio_candidates
from driftline.finetune.dataset.openai_preference import openai_candidates
from driftline.finetune.dataset.reader import read_calls, read_feedback, trusted
from driftline.finetune.dataset.rows import Builder, Candidate, Row, Tally
from driftline.finetune.dataset.split import split_rows
from driftline.finetune.dataset.trl_preference import preference_candidates
from driftline.store import Store

BUILDERS: dict[str, Builder] = {
    "dpo": preference_candidates,
    "kto": kto_candidates,
    "reward": preference_candidates,  # the same rows: TRL's RewardTrainer reads them too
    "openai-dpo": openai_candidates,
    "argilla": argilla_candidates,
    "label-studio": label_studio_candidates,
}
FORMATS = tuple(BUILDERS)


def check_export(fmt: str, filters: ExportFilters) -> None:
    """Raise ValueError for an unknown format or filters out of range."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not 0 <= filters.test_fraction <= 1:
        raise ValueError(f"test_fraction must be between 0 and 1, not {filters.test_fraction}")
    if filters.kto_bad >= filters.kto_good:
        raise ValueError(f"kto_bad ({filters.kto_bad}) must be below kto_good ({filters.kto_good})")


def build_rows(
    store: Store, fmt: str, filters: ExportFilters
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """(train rows, test rows, counts) — deterministic for the same store contents and filters."""
    check_export(fmt, filters)
    filters = filters.resolved()
    tally = Tally()
    stored = read_feedback(store, filters)
    feedback = trusted(stored, filters.app_feedback)
    tally.feedback = len(feedback)
    tally.skipped["app_feedback"] = len(stored) - len(feedback)
    calls = read_calls(store, filters.project, feedback)
    candidates = _dedupe(BUILDERS[fmt](feedback, calls, filters, tally), tally)
    if fmt == "kto":
        candidates = drop_conflicts(candidates, tally)
    tally.sources.update(c.source for c in candidates if c.source)
    train, test = split_rows(filters.project, candidates, filters.test_fraction)
    counts = {
        "feedback": tally.feedback,
        "feedback_sources": dict(sorted(Counter(fb.source for fb in feedback).items())),
        "rows": {"train": len(train), "test": len(test)},
        "sources": dict(sorted(tally.sources.items())),
        "skipped": dict(sorted((k, v) for k, v in tally.skipped.items() if v)),
    }
    return train, test, counts


def _dedupe(candidates: list[Candidate], tally: Tally) -> list[Candidate]:
    """The candidates in feedback order, each identity once (the first)."""
    seen: set[str] = set()
    kept = []
    for c in sorted(candidates, key=lambda c: c.order):
        if c.identity in seen:
            tally.skipped["duplicate"] += 1
            continue
        seen.add(c.identity)
        kept.append(c)
    return kept
