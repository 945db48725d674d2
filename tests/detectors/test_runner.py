"""A detector pass on real text: a reference, a window like it, a window whose topics shift
and whose answers partly go off-topic; results, findings and the review queue in ClickHouse."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftline.detectors.config import DetectorSettings
from driftline.detectors.embedder import Embedder
from driftline.detectors.references import DriftReferenceError, create_reference
from driftline.detectors.runner import Runner, WindowOutcome
from driftline.detectors.scheduler import DetectorLoop
from driftline.store import Store
from tests.detectors.conftest import BASE_NS, MIX, Corpus, insert_calls, split


@pytest.fixture
def settings() -> DetectorSettings:
    return DetectorSettings(
        window_calls=150, permutations=200, consecutive_windows=1, relevance="calibrated"
    )


def test_a_pass_finds_the_shift_and_queues_the_off_topic_answers(
    store: Store, corpus: Corpus, embedder: Embedder, settings: DetectorSettings
) -> None:
    rng = np.random.default_rng(7)
    insert_calls(store, corpus, embedder, split(corpus, MIX, 60, 0), start=0)
    reference = create_reference(store, "alpha", "baseline", {"service": "bot"})
    assert (reference.version, reference.calls) == (1, 300)

    insert_calls(store, corpus, embedder, rng.permutation(split(corpus, MIX, 30, 60)), 1000)
    shifted = split(corpus, ("games", "fonts", "golang"), 50, 0)
    answers = shifted.copy()
    off_topic = np.arange(10, 150, 15)  # ten answers about something else entirely
    answers[off_topic] = split(corpus, ("doc",), 10, 100)
    planted = insert_calls(store, corpus, embedder, shifted, 2000, responses=answers)

    runner = Runner(store, settings, embedder)
    first, second = runner.run_once()
    assert not first.drifting
    assert second.drifting and second.alerting
    assert {r.test for r in second.results} == set(settings.tests)
    assert all(r.p_value < 0.01 for r in second.results)
    topics = next(r for r in second.results if r.test == "topics")
    grown = topics.details["clusters"][0]
    assert grown["change"] > 0

    queue = store.query(
        "SELECT trace_id, reasons, source FROM review_queue FINAL WHERE source = 'flag'"
    )
    flagged = {row["trace_id"]: row["reasons"] for row in queue}
    hits = [planted[i] for i in off_topic if planted[i] in flagged]
    assert len(hits) >= 8  # the planted off-topic answers are queued ...
    assert all("low_relevance" in flagged[t] or "novel" in flagged[t] for t in hits)
    assert len(flagged) <= 60  # ... without flooding the queue

    assert runner.run_once() == []  # every complete window is tested once
    runs = store.query("SELECT count() AS n, sum(drifting) AS d FROM detector_runs FINAL")
    assert runs == [{"n": 2, "d": 1}]
    findings = store.query("SELECT count() AS n FROM findings FINAL")
    assert findings == [{"n": 2 * len(settings.tests)}]


def test_reference_needs_enough_calls(store: Store, corpus: Corpus, embedder: Embedder) -> None:
    insert_calls(store, corpus, embedder, split(corpus, MIX, 5, 0), start=0)
    with pytest.raises(DriftReferenceError, match="needs at least 50"):
        create_reference(store, "alpha", "tiny")
    with pytest.raises(DriftReferenceError, match="unknown scope key"):
        create_reference(store, "alpha", "x", {"region": "eu"})


def test_the_background_loop_tests_windows_and_exports_metrics(
    store: Store, corpus: Corpus, embedder: Embedder
) -> None:
    insert_calls(store, corpus, embedder, split(corpus, MIX, 20, 0), start=0)
    create_reference(store, "alpha", "loop")
    insert_calls(store, corpus, embedder, split(corpus, ("games", "fonts"), 50, 0), start=500)
    registry = CollectorRegistry()
    passes: list[list[WindowOutcome]] = []
    settings = DetectorSettings(
        window_calls=100,
        permutations=50,
        interval_seconds=0.2,
        tests=("centroid", "topics"),
        embedder="transformer",  # the model the calls were embedded with
    )
    loop = DetectorLoop(store, settings, registry, on_pass=passes.append)
    loop.start()
    try:
        deadline = time.monotonic() + 120
        while not any(passes) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        loop.stop()
    (outcome,) = next(p for p in passes if p)
    assert outcome.drifting
    labels = {"project": "alpha", "reference": "loop"}
    assert registry.get_sample_value("driftline_drift_drifting", labels) == 1
    p_value = registry.get_sample_value("driftline_drift_p_value", {**labels, "test": "centroid"})
    assert p_value is not None and p_value < 0.05


def test_time_windows_wait_for_their_slot_to_close(
    store: Store, corpus: Corpus, embedder: Embedder
) -> None:
    insert_calls(store, corpus, embedder, split(corpus, MIX, 20, 0), start=0)
    create_reference(store, "alpha", "hourly")
    insert_calls(store, corpus, embedder, split(corpus, MIX, 20, 20), start=1000)
    settings = DetectorSettings(
        window_calls=0, window_seconds=600, min_window_calls=50, permutations=50,
        tests=("centroid",),
    )  # fmt: skip
    base = BASE_NS / 1e9  # 200 s into a 600 s slot; the window calls open the slot at +1000 s
    early = Runner(store, settings, embedder, clock=lambda: base + 1500)
    assert early.run_once() == []  # the slot holding the calls is still open
    runner = Runner(store, settings, embedder, clock=lambda: base + 5000)
    (outcome,) = runner.run_once()
    assert outcome.n_current == 100 and not outcome.drifting
    assert runner.run_once() == []
