"""One evaluation pass per evaluator: read the calls that arrived since its last pass, keep a
deterministic sample within the day's budgets, grade them concurrently, and store each score as
feedback (source `judge`, user `NAME@VERSION`) under an id made from the evaluator version, the
call and the criterion, so a call is graded once per evaluator version whatever restarts."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from driftline.detectors.config import DetectorSettings
from driftline.detectors.embeddings import TEXT_OPERATIONS, TextEmbedder
from driftline.detectors.tables import queue_calls
from driftline.evaluators import tables
from driftline.evaluators.agreement import Bar, JudgeTrust, judge_trust
from driftline.evaluators.builtins import CHECKS, Answer
from driftline.evaluators.config import EvaluationSettings, EvaluatorSettings
from driftline.evaluators.judge import Graded, JudgeError, LLMJudge, evaluator_judge
from driftline.evaluators.metrics import EvaluatorMetrics
from driftline.ingest.tables import arrivals
from driftline.review.config import ReviewSettings
from driftline.review.feedback import JUDGE_AUDIT, FeedbackIn, store_feedback
from driftline.store import Store
from driftline.store.sql import Relation

log = logging.getLogger("driftline.evaluators")
_NAMESPACE = uuid.UUID("5b0f8f55-7a43-4b4e-9d1c-0e6a3b1c2d40")
_LOOKBACK_NS = 7 * 24 * 3600 * 10**9  # as the embedder: calls that started a week before arriving
_COLUMNS = (
    "c.project_id AS project_id, c.trace_id AS trace_id, c.span_id AS span_id, "
    "c.service AS service, c.input_text AS input_text, c.output_text AS output_text, "
    "c.finish_reasons AS finish_reasons, c.attributes['gen_ai.output.type'] AS output_type, "
    "toUnixTimestamp64Nano(c.start_time) AS start_ns"
)
Grade = Callable[[dict[str, Any]], Graded]


@dataclass
class PassOutcome:
    read: int = 0
    graded: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    audited: int = 0  # graded calls queued for review

    def add(self, other: PassOutcome) -> None:
        self.read += other.read
        self.graded += other.graded
        self.audited += other.audited
        self.cost_usd += other.cost_usd
        for mine, theirs in ((self.failed, other.failed), (self.skipped, other.skipped)):
            for reason, n in theirs.items():
                mine[reason] = mine.get(reason, 0) + n


def _after(row: dict[str, Any]) -> tables.Position:
    """The position just past an arrived row."""
    return tables.Position(row["ingested_ns"], (row["project_id"], row["trace_id"], row["span_id"]))


def sampled(salt: str, trace_id: str, span_id: str, rate: float) -> bool:
    """Whether the call is in the sample `salt` names: the same answer on every pass."""
    digest = hashlib.sha256(f"{salt}/{trace_id}{span_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class Evaluator:
    """One configured evaluator, graded pass by pass."""

    def __init__(
        self,
        name: str,
        settings: EvaluatorSettings,
        review: ReviewSettings,
        metrics: EvaluatorMetrics,
        judge: LLMJudge | None = None,
        detectors: DetectorSettings | None = None,
    ) -> None:
        self.name, self.settings, self.review, self.metrics = name, settings, review, metrics
        self.detectors = detectors or DetectorSettings.model_validate({})  # `relevance`'s embedder
        self._embedder: TextEmbedder | None = None
        self.user = f"{name}@{settings.version}"
        self.projects: set[str] = set(settings.projects)  # whose calls it grades
        self._labels = (name, settings.version)
        self._judge = judge
        if settings.kind == "llm_judge" and judge is None:
            self._judge = evaluator_judge(settings, settings.criteria or [])

    def criteria(self, project: str) -> list[str]:
        if self.settings.kind != "llm_judge":
            return [self.settings.kind]
        return self.settings.criteria or self.review.rubric_for(project).criteria

    def grade(self, call: dict[str, Any]) -> Graded:
        """One call's scores (a built-in check: 1.0 when the answer has the problem)."""
        if self.settings.kind == "relevance":
            return Graded({"relevance": self._relevance(call)}, 0, 0)
        if self._judge is None:
            answer = Answer(call["output_text"], list(call["finish_reasons"]), call["output_type"])
            return Graded({self.settings.kind: float(CHECKS[self.settings.kind](answer))}, 0, 0)
        criteria = self.criteria(call["project_id"])
        return self._judge.grade(call["input_text"], call["output_text"], criteria)

    def _relevance(self, call: dict[str, Any]) -> float:
        """The cosine between the question's and the answer's embeddings."""
        if self._embedder is None:  # loaded on first use: a model takes seconds to load
            from driftline.detectors.embedder import make_embedder

            self._embedder = make_embedder(self.detectors)
        question, answer = self._embedder.encode([call["input_text"], call["output_text"]])
        norms = float(np.linalg.norm(question) * np.linalg.norm(answer))
        return round(float(question @ answer) / norms, 6) if norms else 0.0

    def cost(self, graded: Graded) -> float:
        s = self.settings
        return (
            graded.prompt_tokens * s.input_price_per_mtok
            + graded.completion_tokens * s.output_price_per_mtok
        ) / 1e6

    def run_once(self, store: Store, options: EvaluationSettings, now_ns: int) -> PassOutcome:
        """Grade what arrived since the last pass (up to `batch_calls`), and move past it."""
        s = self.settings
        at = tables.position(store, self.name, s.version)
        upto = now_ns - int(options.settle_seconds * 1e9)
        if at is None:  # a new evaluator (version) grades what arrives from now on
            tables.save_position(store, self.name, s.version, tables.Position(upto))
            return PassOutcome()
        rows = self._arrived(store, at, upto, options.batch_calls)
        outcome = self._grade_rows(store, rows, now_ns)
        if rows:
            tables.save_position(store, self.name, s.version, _after(rows[-1]))
        return outcome

    def backfill(
        self, store: Store, since_ns: int, until_ns: int, batch: int,
        progress: Callable[[int], None] = lambda _n: None,
    ) -> PassOutcome:  # fmt: skip
        """Grade the calls that arrived between `since_ns` and `until_ns`, as a live pass would
        (sample, budgets, cost cap); what is graded already is not stored twice, and the live
        passes' position is left where it is. `progress(n)` after each batch of n calls."""
        total, at = PassOutcome(), tables.Position(since_ns)
        while rows := self._arrived(store, at, until_ns, batch):
            total.add(self._grade_rows(store, rows, time.time_ns()))
            progress(len(rows))
            at = _after(rows[-1])
        return total

    def arrived_count(self, store: Store, since_ns: int, until_ns: int) -> int:
        new = self._arrivals(tables.Position(since_ns), until_ns)
        return int(store.query(f"SELECT count() AS n FROM {new}", new.params)[0]["n"])

    def _grade_rows(self, store: Store, rows: list[dict[str, Any]], now_ns: int) -> PassOutcome:
        outcome = PassOutcome(read=len(rows))
        if not rows:
            return outcome
        s = self.settings
        day = datetime.fromtimestamp(now_ns / 1e9, UTC).date()
        totals = tables.day_totals(store, self.name, s.version, day)
        chosen = self._choose(rows, totals, outcome)
        graded = self._grade_all(chosen, totals, outcome)
        self._store(store, graded)
        if self._judge is not None:
            outcome.audited = self._audit(store, [row for row, _ in graded])
        self.projects.update(row["project_id"] for row, _ in graded)
        tables.save_day_totals(store, self.name, s.version, day, totals)
        spent = sum(t.cost_usd for t in totals.values())
        self.metrics.spend_today.labels(*self._labels).set(spent)
        return outcome

    def _arrivals(self, at: tables.Position, upto: int) -> Relation:
        return arrivals(_COLUMNS, at.ingested_ns, at.key, upto, at.ingested_ns - _LOOKBACK_NS,
                        TEXT_OPERATIONS, answered_only=False)  # fmt: skip

    def _arrived(
        self, store: Store, at: tables.Position, upto: int, limit: int
    ) -> list[dict[str, Any]]:
        new = self._arrivals(at, upto)
        return store.query(
            f"SELECT * FROM {new} ORDER BY ingested_ns, project_id, trace_id, span_id "
            f"LIMIT {int(limit)}",
            new.params,
        )

    def _choose(
        self,
        rows: list[dict[str, Any]],
        totals: dict[tuple[str, str], tables.DayTotal],
        outcome: PassOutcome,
    ) -> list[dict[str, Any]]:
        """The rows in the sample, within each (project, service)'s daily budget."""
        s, chosen = self.settings, []
        taken: dict[tuple[str, str], int] = {}
        for row in rows:
            if not s.grades(row["project_id"]):
                continue
            if not sampled(self.name, row["trace_id"], row["span_id"], s.sample_rate):
                self._skip(outcome, "not_sampled")
                continue
            scope = (row["project_id"], row["service"])
            used = totals.get(scope, tables.DayTotal())
            if used.graded + used.failed + taken.get(scope, 0) >= s.daily_budget:
                self._skip(outcome, "daily_budget")
                continue
            taken[scope] = taken.get(scope, 0) + 1
            chosen.append(row)
        return chosen

    def _grade_all(
        self,
        rows: list[dict[str, Any]],
        totals: dict[tuple[str, str], tables.DayTotal],
        outcome: PassOutcome,
    ) -> list[tuple[dict[str, Any], Graded]]:
        """Grade `rows`, `concurrency` at a time; no new request once the day's spend has
        reached the cap (those in flight may pass it by their own cost)."""
        lock = threading.Lock()
        done: list[tuple[dict[str, Any], Graded]] = []
        cap = self.settings.daily_cost_cap_usd if self._judge is not None else float("inf")

        def one(row: dict[str, Any]) -> None:
            scope = (row["project_id"], row["service"])
            with lock:
                if sum(t.cost_usd for t in totals.values()) >= cap:
                    self._skip(outcome, "cost_cap")
                    return
            try:
                graded = self.grade(row)
            except JudgeError as exc:
                with lock:
                    totals.setdefault(scope, tables.DayTotal()).failed += 1
                    outcome.failed[exc.reason] = outcome.failed.get(exc.reason, 0) + 1
                self.metrics.failed.labels(*self._labels, exc.reason).inc()
                log.warning("%s could not grade %s/%s: %s", self.user, row["trace_id"],
                            row["span_id"], exc)  # fmt: skip
                return
            cost = self.cost(graded)
            with lock:
                total = totals.setdefault(scope, tables.DayTotal())
                total.graded += 1
                total.cost_usd += cost
                outcome.graded += 1
                outcome.cost_usd += cost
                done.append((row, graded))
            self.metrics.graded.labels(*self._labels).inc()
            self.metrics.spend.labels(*self._labels).inc(cost)

        workers = self.settings.concurrency if self._judge is not None else 1
        with ThreadPoolExecutor(workers, thread_name_prefix=f"driftline-eval-{self.name}") as pool:
            list(pool.map(one, rows))
        return done

    def _store(self, store: Store, results: Iterable[tuple[dict[str, Any], Graded]]) -> None:
        by_project: dict[str, list[FeedbackIn]] = {}
        for row, graded in results:
            for criterion, score in graded.scores.items():
                key = f"{self.user}/{row['trace_id']}{row['span_id']}/{criterion}"
                by_project.setdefault(row["project_id"], []).append(
                    FeedbackIn.model_validate(
                        {
                            "id": uuid.uuid5(_NAMESPACE, key),
                            "trace_id": row["trace_id"],
                            "span_id": row["span_id"],
                            "name": criterion,
                            "value": score,
                            "user": self.user,
                        }
                    )
                )
        for project, records in by_project.items():
            store_feedback(store, project, records, "judge")

    def _audit(self, store: Store, rows: list[dict[str, Any]]) -> int:
        """Queue `audit_rate` of the graded calls for review (reason judge_audit): reviewers
        score the same criteria, without the judge's scores on the page."""
        picked: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if sampled(
                f"{self.user}/audit", row["trace_id"], row["span_id"], self.settings.audit_rate
            ):
                picked.setdefault(row["project_id"], []).append(row)
        return sum(
            queue_calls(store, project, calls, JUDGE_AUDIT, f"judge:{self.user}")
            for project, calls in picked.items()
        )

    def trust(self, store: Store, project: str, now_ns: int) -> JudgeTrust:
        """People's agreement with this judge on the project's audited calls; in /metrics."""
        found = judge_trust(store, project, self.user, Bar.of(self.settings), now_ns)
        self.metrics.observe_trust(project, self.name, self.settings.version, found)
        return found

    def _skip(self, outcome: PassOutcome, reason: str) -> None:
        outcome.skipped[reason] = outcome.skipped.get(reason, 0) + 1
        self.metrics.skipped.labels(*self._labels, reason).inc()


class EvaluatorLoop:
    """A thread running a pass of every evaluator each `interval_seconds`, beside ingest and
    the detectors (it only reads calls and writes feedback); errors are logged."""

    def __init__(self, store: Store, evaluators: list[Evaluator], options: EvaluationSettings):
        self.store, self.evaluators, self.options = store, evaluators, options
        self._trust_due = 0  # when the judges' agreement is next read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-evaluators", daemon=True)

    @classmethod
    def configured(
        cls,
        store: Store,
        evaluators: Mapping[str, EvaluatorSettings],
        options: EvaluationSettings,
        review: ReviewSettings,
        detectors: DetectorSettings,
        registry: CollectorRegistry | None,
    ) -> EvaluatorLoop:
        """The loop of the configured evaluators, their series in `registry`."""
        metrics = EvaluatorMetrics(registry)
        return cls(
            store,
            [Evaluator(name, config, review, metrics, detectors=detectors)
             for name, config in evaluators.items()],
            options,
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> dict[str, PassOutcome]:
        """A pass of every evaluator, then (every `agreement_interval_seconds`: it reads the
        agreement window's feedback) each judge's agreement with people, per project."""
        now = time.time_ns()
        outcomes = {e.name: e.run_once(self.store, self.options, now) for e in self.evaluators}
        if now >= self._trust_due:
            self._trust_due = now + int(self.options.agreement_interval_seconds * 1e9)
            for evaluator in self.evaluators:
                if evaluator.settings.kind == "llm_judge":
                    for project in sorted(evaluator.projects):
                        evaluator.trust(self.store, project, now)
        return outcomes

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("evaluation pass failed; next in %ss", self.options.interval_seconds)
            self._stop.wait(self.options.interval_seconds)
