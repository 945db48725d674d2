"""One detector pass: embed new calls, freeze the references of new service versions
(versions.py), then test every complete window of every reference.

Windows of a reference follow each other without overlap: a window is the next `window_calls`
calls in the reference's scope after the last window tested (or a fixed time slot). Each is
tested once; its run, findings and queued calls are keyed by the window, so a pass repeated
after a crash stores nothing twice. A window drifts when the joint permutation test (joint.py:
every test on the same permutations, Westfall-Young min-p) rejects at least one test at `alpha`;
the drift alerts after `consecutive_windows` drifting windows in a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftline.detectors import flags as flagging
from driftline.detectors import tables
from driftline.detectors.config import DetectorSettings
from driftline.detectors.embeddings import (
    BatchOutcome,
    Calls,
    EmbeddingJob,
    TextEmbedder,
    load_calls,
)
from driftline.detectors.joint import joint_test
from driftline.detectors.metrics import DetectorMetrics
from driftline.detectors.references import (
    Reference,
    list_references,
    members_condition,
    scope_where,
)
from driftline.detectors.result import TwoSampleResult
from driftline.detectors.versions import version_references
from driftline.store import Store
from driftline.store.sql import Where

log = logging.getLogger("driftline.detectors")

# How much each reason adds to a queued call's priority (before its own severity).
_WEIGHTS = {
    "error": 3.0,
    "empty": 3.0,
    "refusal": 2.5,
    "low_relevance": 2.0,
    "novel": 2.0,
    "truncated": 1.5,
    "latency": 1.0,
    "tokens": 1.0,
    "cost": 1.0,
}


@dataclass
class WindowOutcome:
    """What testing one window found."""

    reference: str
    window_key: str
    results: list[TwoSampleResult]
    rejected: list[bool]
    drifting: bool
    consecutive: int
    alerting: bool
    flagged: int
    queued: int
    n_current: int


@dataclass
class _ReferenceData:
    calls: Calls
    relevance: np.ndarray
    novelty: flagging.NoveltyScorer
    last_ns: int  # where windows start: after the reference, after the last window tested
    consecutive: int  # drifting windows in a row so far


@dataclass
class Runner:
    store: Store
    settings: DetectorSettings
    embedder: TextEmbedder
    metrics: DetectorMetrics | None = None
    clock: Callable[[], float] = time.time
    _cache: dict[tuple[str, str, int], _ReferenceData] = field(default_factory=dict)
    # The embedder thread and a reference's load both embed: one at a time, so none twice. A
    # load waiting for its turn is let in between two batches (a lock alone is not fair).
    _embedding: threading.Lock = field(default_factory=threading.Lock)
    _load_waiting: threading.Event = field(default_factory=threading.Event)
    _full_projects: set[str] = field(default_factory=set)  # at max_version_references, warned

    def run_once(self) -> list[WindowOutcome]:
        """Embed waiting calls, freeze new versions' references, then test every new window."""
        self.embed()
        return self.test()

    def embedding_job(self) -> EmbeddingJob:
        s = self.settings
        return EmbeddingJob(
            self.store,
            self.embedder,
            s.embed_batch,
            lookback_seconds=s.embed_lookback_hours * 3600,
            max_lag_seconds=s.max_lag_seconds,
            settle_seconds=s.embed_settle_seconds,
            metrics=self.metrics,
        )

    def embed(self, stopping: Callable[[], bool] = lambda: False) -> BatchOutcome:
        """Up to `embed_batches_per_pass` batches, fewer once `stopping()`; the last batch's
        outcome (pending: what is still waiting)."""
        job = self.embedding_job()
        outcome = BatchOutcome(0, 0, 0.0, 0)
        for _ in range(self.settings.embed_batches_per_pass):
            if stopping():
                break
            while self._load_waiting.is_set():
                time.sleep(0.01)
            with self._embedding:
                outcome = job.run_once()
            if outcome.pending == 0:
                break
        return outcome

    def test(self) -> list[WindowOutcome]:
        """Freeze new versions' references, then test every complete window of every reference."""
        if self.settings.per_version_references:
            full: set[str] = set()
            try:
                version_references(
                    self.store, self.settings.version_reference_calls, self.embedder.name,
                    self.settings.max_version_references, full,
                )  # fmt: skip
            except Exception:
                log.exception("per-version references failed; testing the existing ones")
            for project in sorted(full - self._full_projects):
                log.warning(
                    "project %s has %d per-version references "
                    "(detectors.max_version_references): new versions get none",
                    project, self.settings.max_version_references,
                )  # fmt: skip
            self._full_projects = full
        horizon = self.embedding_job().horizon_ns()
        outcomes = []
        for reference in list_references(self.store):
            try:
                outcomes += self.run_reference(reference, horizon)
            except Exception:
                log.exception("detectors failed on reference %s", reference.name)
        return outcomes

    def run_reference(
        self, reference: Reference, horizon_ns: int | None = None
    ) -> list[WindowOutcome]:
        """Test the reference's complete windows among calls that started before `horizon_ns`
        (the embedder's watermark: later calls may still be waiting; None: no bound)."""
        data = self._reference_data(reference)
        outcomes = []
        while (window := self._next_window(reference, data, horizon_ns)) is not None:
            outcomes.append(self._test_window(reference, data, window))
        return outcomes

    # -- windows ---------------------------------------------------------------------------------

    def _next_window(
        self, reference: Reference, data: _ReferenceData, horizon_ns: int | None
    ) -> Calls | None:
        """The next window: one range read of call_vectors after the last window tested."""
        after = data.last_ns
        now_ns = int(self.clock() * 1e9)
        until = min(now_ns, horizon_ns) if horizon_ns is not None else now_ns
        where = scope_where(reference.project, reference.scope)
        where.add("c.start_time > fromUnixTimestamp64Nano({after:Int64}, 'UTC')", after=after)
        where.add("c.start_time < fromUnixTimestamp64Nano({until:Int64}, 'UTC')", until=until)
        if self.settings.window_calls:
            size = self.settings.window_calls
            calls = load_calls(
                self.store,
                reference.project,
                self.embedder.name,
                str(where),
                where.params,
                limit=size,
            )
            return calls if len(calls) == size else None
        width = self.settings.window_seconds * 1_000_000_000
        start = after - after % width + (width if after % width else 0)
        while start + width <= until:
            slot = Where(str(where), **where.params).between(
                "c.start_time", start, start + width, prefix="slot_"
            )
            calls = load_calls(
                self.store, reference.project, self.embedder.name, str(slot), slot.params,
                limit=self.settings.max_samples, order="cityHash64(c.trace_id, c.span_id)",
            )  # fmt: skip
            if len(calls) >= self.settings.min_window_calls:
                return calls
            start += width  # too few calls to test: the slot is skipped
        return None

    def _windows_so_far(self, reference: Reference) -> tuple[int, int]:
        """The end of the last window tested and its drifting streak: read once per reference
        and process, then kept by the runner (windows come after the reference's calls)."""
        return tables.last_window(
            self.store, reference.project, reference.name, reference.version, reference.first_ns
        )

    # -- the reference -------------------------------------------------------------------------

    def _reference_data(self, reference: Reference) -> _ReferenceData:
        """The reference's vectors (up to `max_samples` of its calls, a seeded sample), embedding
        those this model has not seen: a new model, or calls the backlog policy sampled out."""
        key = (reference.project, reference.name, reference.version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        params: dict[str, Any] = {}
        members = members_condition(reference, self.settings.max_samples, params)
        self._load_waiting.set()
        try:
            with self._embedding:
                embedded = self.embedding_job().embed_where(reference.project, members, params)
        finally:
            self._load_waiting.clear()
        if embedded:
            log.info("embedded %d calls of reference %s with %s", embedded, reference.name,
                     self.embedder.name)  # fmt: skip
        calls = load_calls(self.store, reference.project, self.embedder.name, members, params)
        if len(calls) < 2 * self.settings.novelty_neighbours:
            raise ValueError(
                f"reference {reference.name!r} has {len(calls)} embedded calls; "
                "too few to test against"
            )
        last_window, consecutive = self._windows_so_far(reference)
        data = _ReferenceData(
            calls=calls,
            relevance=flagging.relevance(calls.prompts, calls.responses),
            novelty=flagging.NoveltyScorer(
                _pairs(calls), k=self.settings.novelty_neighbours, seed=self.settings.seed
            ),
            last_ns=max(int(max(calls.column("start_ns"))), reference.last_ns, last_window),
            consecutive=consecutive,
        )
        self._cache = {key: data}  # one reference's vectors at a time bounds memory
        return data

    # -- one window ----------------------------------------------------------------------------

    def _test_window(
        self, reference: Reference, data: _ReferenceData, window: Calls
    ) -> WindowOutcome:
        started = time.monotonic()
        starts = window.column("start_ns")
        key = f"{reference.name}@{reference.version}/{starts[0]}-{starts[-1]}"
        results, rejected, drifting = self._decide(data.calls, window)
        consecutive = data.consecutive + 1 if drifting else 0
        alerting = consecutive >= self.settings.consecutive_windows
        per_call = self._flags(data, window)
        queued = self._enqueue(reference, key, window, per_call)
        self._store_window(
            reference, key, window, results, rejected, drifting, consecutive, alerting, per_call,
            queued, len(data.calls),
        )  # fmt: skip
        data.last_ns, data.consecutive = starts[-1], consecutive
        flagged = sum(1 for f in per_call if f)
        if self.metrics:
            self.metrics.observe_window(
                reference, results, drifting, consecutive, per_call, time.monotonic() - started
            )
        return WindowOutcome(
            reference.name, key, results, rejected, drifting, consecutive, alerting, flagged,
            queued, len(window),
        )  # fmt: skip

    def _decide(
        self, reference: Calls, window: Calls
    ) -> tuple[list[TwoSampleResult], list[bool], bool]:
        """The window's tests on one set of permutations, and Westfall-Young's decision on the
        `decide_on` tests; each result's details carry its adjusted p-value beside its own."""
        s = self.settings
        joint = joint_test(
            reference.responses, window.responses, tests=s.tests, alpha=s.alpha,
            permutations=s.permutations, seed=s.seed, device=s.device,
            max_samples=s.max_samples, topic_clusters=s.topic_clusters,
            reference_texts=reference.column("output_text"),
            current_texts=window.column("output_text"),
            decide_on=[t for t in s.decide_on if t in s.tests] or None,
        )  # fmt: skip
        results = [
            dataclasses.replace(r, details={**r.details, "adjusted_p_value": adjusted})
            for r, adjusted in zip(joint.results, joint.adjusted, strict=True)
        ]
        return results, joint.rejected, joint.drifting

    def _flags(self, data: _ReferenceData, window: Calls) -> list[list[flagging.Flag]]:
        s = self.settings
        threshold = s.relevance_threshold
        if s.relevance == "calibrated" and len(data.relevance) >= 1 / s.relevance_quantile:
            threshold = flagging.relevance_threshold(data.relevance, s.relevance_quantile)
        ref = data.calls
        return flagging.call_flags(
            relevance=flagging.relevance(window.prompts, window.responses),
            relevance_threshold=threshold,
            novelty_p_values=data.novelty.p_values(_pairs(window)),
            novelty_q=s.novelty_q,
            latency_z=_z(ref, window, "duration_ms"),
            tokens_z=_z(ref, window, "output_tokens"),
            cost_z=_z(ref, window, "cost_usd"),
            z_threshold=s.z_threshold,
            errors=[e or None for e in window.column("error_type")],
            finish_reasons=window.column("finish_reasons"),
            outputs=window.column("output_text"),
        )

    def _enqueue(
        self,
        reference: Reference,
        key: str,
        window: Calls,
        per_call: list[list[flagging.Flag]],
    ) -> int:
        """Flagged calls by priority up to today's budget, plus a seeded audit sample. Every
        flagged call is recorded with its reasons, past the budget too (call_flags)."""
        trace_ids, span_ids, starts = (
            window.column(c) for c in ("trace_id", "span_id", "start_ns")
        )
        tables.record_flags(self.store, reference.project, [
            {"trace_id": trace_ids[i], "span_id": span_ids[i], "start_ns": starts[i],
             "reasons": [f.reason for f in flags]}
            for i, flags in enumerate(per_call) if flags
        ], key)  # fmt: skip
        budget = max(self.settings.review_daily_budget - self._queued_today(reference), 0)
        flagged = sorted(
            (i for i, f in enumerate(per_call) if f), key=lambda i: -_priority(per_call[i])
        )[:budget]
        audit = [
            i
            for i, f in enumerate(per_call)
            if not f and _audit_pick(window, i, self.settings.audit_rate)
        ]
        rows = [(i, "flag") for i in flagged] + [(i, "audit") for i in audit]
        if not rows:
            return 0
        tables.insert(
            self.store,
            "review_queue",
            {
                "project_id": [reference.project] * len(rows),
                "trace_id": [trace_ids[i] for i, _ in rows],
                "span_id": [span_ids[i] for i, _ in rows],
                "call_time": [starts[i] for i, _ in rows],
                "scope": [list(reference.scope.items())] * len(rows),
                "reasons": [[f.reason for f in per_call[i]] for i, _ in rows],
                "scores": [[(f.reason, f.score) for f in per_call[i]] for i, _ in rows],
                "thresholds": [[(f.reason, f.threshold) for f in per_call[i]] for i, _ in rows],
                "notes": [[(f.reason, f.detail) for f in per_call[i]] for i, _ in rows],
                "priority": [_priority(per_call[i]) for i, _ in rows],
                "source": [source for _, source in rows],
                "window_key": [key] * len(rows),
            },
        )
        return len(rows)

    def _queued_today(self, reference: Reference) -> int:
        today = datetime.fromtimestamp(self.clock(), UTC).date().isoformat()
        # A call queued today arrived within the look-back of its start: that bounds the read.
        since = self.clock() - 86_400 - self.settings.embed_lookback_hours * 3600
        return tables.flagged_today(self.store, reference.project, today, int(since * 1000) * 10**6)

    def _store_window(
        self,
        reference: Reference,
        key: str,
        window: Calls,
        results: list[TwoSampleResult],
        rejected: list[bool],
        drifting: bool,
        consecutive: int,
        alerting: bool,
        per_call: list[list[flagging.Flag]],
        queued: int,
        n_reference: int,
    ) -> None:
        counts = Counter(reason for call in per_call for reason in {f.reason for f in call})
        starts = window.column("start_ns")
        scope = list(reference.scope.items())
        n = len(results)
        tables.insert(
            self.store,
            "findings",
            {
                "project_id": [reference.project] * n,
                "window_key": [key] * n,
                "scope": [scope] * n,
                "window_end": [starts[-1]] * n,
                "detector": [r.test for r in results],
                "statistic": [float(r.statistic) for r in results],
                "effect_size": [float(r.effect_size) for r in results],
                "p_value": [float(r.p_value) for r in results],
                "rejected": [int(x) for x in rejected],
                "details": [json.dumps(r.details, default=_json_default) for r in results],
            },
        )
        tables.insert(
            self.store,
            "detector_runs",
            {
                "project_id": [reference.project],
                "window_key": [key],
                "scope": [scope],
                "reference": [reference.name],
                "reference_version": [reference.version],
                "window_start": [starts[0]],
                "window_end": [starts[-1]],
                "n_reference": [n_reference],
                "n_current": [len(window)],
                "drifting": [int(drifting)],
                "consecutive": [consecutive],
                "alerting": [int(alerting)],
                "flagged": [sum(1 for f in per_call if f)],
                "flag_counts": [sorted(counts.items())],
                "queued": [queued],
            },
        )


def _pairs(calls: Calls) -> np.ndarray:
    """Prompt and response side by side: an answer is novel for the question it answers
    (measured: far stronger than the response alone when topics merely resemble each other)."""
    return np.hstack([calls.prompts, calls.responses])


def _z(reference: Calls, window: Calls, column: str) -> np.ndarray:
    """Robust z on log1p values: latency, tokens and cost are skewed; on the raw scale a
    lognormal latency flags a few percent of normal calls at z > 4."""
    ref = np.log1p(np.maximum(np.asarray(reference.column(column), dtype=np.float64), 0))
    cur = np.log1p(np.maximum(np.asarray(window.column(column), dtype=np.float64), 0))
    return flagging.robust_z(ref, cur)


def _priority(call_flags: list[flagging.Flag]) -> float:
    return sum(_WEIGHTS.get(f.reason, 1.0) for f in call_flags)


def _audit_pick(window: Calls, i: int, rate: float) -> bool:
    """A stable pseudo-random pick: the same call is picked (or not) on every rerun."""
    if rate <= 0:
        return False
    key = f"{window.columns.column('trace_id')[i]}{window.columns.column('span_id')[i]}"
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return digest / 2**64 < rate


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
