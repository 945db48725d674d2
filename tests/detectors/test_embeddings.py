"""Embedding at volume on chDB: the watermark embeds every call once (late ones too), the backlog
policy keeps the lag bounded and says so, models never mix, and reads follow the window."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from driftline.detectors.config import DetectorSettings
from driftline.detectors.embeddings import EmbeddingJob, dequantize, load_calls
from driftline.detectors.metrics import DetectorMetrics
from driftline.detectors.references import create_reference, list_references
from driftline.detectors.runner import Runner
from driftline.store import Store, open_store
from driftline.store.migrations import migrate, migrations
from tests.conftest import migrate_to
from tests.detectors.conftest import store_calls
from tests.detectors.recording import RecordingStore
from tests.detectors.test_versions import HashingEmbedder

HOUR_NS = 3600 * 10**9


def add_calls(
    store: Store, start: int, count: int, first_ns: int, step_ns: int = 10**9, **columns: list
) -> list[str]:
    """`count` chat calls of project alpha, one per `step_ns` from `first_ns`; their trace ids."""
    numbers = range(start, start + count)
    return store_calls(
        store, start, count, first_ns,
        [f"question {i} about topic {i % 7}" for i in numbers],
        columns.pop("output_text", [f"answer {i} on topic {i % 7} in words" for i in numbers]),
        step_ns, **columns,
    )  # fmt: skip


def job(store: Store, embedder: HashingEmbedder, **kwargs: float) -> EmbeddingJob:
    return EmbeddingJob(store, embedder, int(kwargs.pop("batch", 50)), settle_seconds=0, **kwargs)


def vector_counts(store: Store, model: str) -> tuple[int, int]:
    row = store.query(
        "SELECT count() AS n, uniqExact(trace_id, span_id) AS d FROM call_vectors "
        "WHERE model = {m:String}",
        {"m": model},
    )[0]
    return int(row["n"]), int(row["d"])


def test_each_call_is_embedded_once_and_a_late_spool_too(store: Store) -> None:
    hashing = HashingEmbedder()
    now = time.time_ns()
    add_calls(store, 0, 120, now - 200 * 10**9)
    add_calls(store, 120, 1, now, operation=["embeddings"])  # no answer to embed
    add_calls(store, 121, 1, now, output_text=[""])
    embedding = job(store, hashing)
    assert embedding.pending() == 120
    assert embedding.backfill() == 120
    assert embedding.pending() == 0 and embedding.run_once().embedded == 0
    # An SDK spool delivered now holds calls made three hours ago: new arrivals all the same.
    late = add_calls(store, 500, 30, now - 3 * HOUR_NS)
    assert embedding.pending() == 30
    assert embedding.backfill() == 30
    assert vector_counts(store, hashing.name) == (150, 150)
    # The cursor survives a restart: a new job finds nothing more to do.
    assert job(store, hashing).backfill() == 0
    assert vector_counts(store, hashing.name) == (150, 150)
    stored = store.query_arrow(
        "SELECT response_vector FROM call_vectors WHERE trace_id = {t:String}", {"t": late[0]}
    )
    expected = hashing.encode(["answer 500 on topic 3 in words"])[0]
    assert float(dequantize(stored, "response_vector")[0] @ expected) > 0.999


def test_a_call_later_than_the_lookback_is_not_read(store: Store) -> None:
    hashing = HashingEmbedder()
    now = time.time_ns()
    add_calls(store, 0, 10, now - 10 * 10**9)
    add_calls(store, 100, 10, now - 3 * HOUR_NS)  # later than a one-hour look-back allows
    assert job(store, hashing, lookback_seconds=3600).backfill() == 10


def test_a_repeated_batch_stores_nothing_twice(store: Store) -> None:
    """A crash between storing vectors and moving the cursor repeats the batch."""
    hashing = HashingEmbedder()
    add_calls(store, 0, 40, time.time_ns() - 60 * 10**9)
    embedding = job(store, hashing)
    batch = store.query_arrow(
        "SELECT project_id, trace_id, span_id, start_time, service, service_version, "
        "response_model, agent_name, duration_ms, output_tokens, cost_usd, error_type, "
        "finish_reasons, input_text, output_text FROM llm_calls"
    )
    assert embedding.embed(batch) == 40
    assert embedding.backfill() == 0  # the cursor never moved, but every call has its vectors
    assert vector_counts(store, hashing.name) == (40, 40)


def test_overload_embeds_a_uniform_sample_and_keeps_the_lag_bounded(store: Store) -> None:
    hashing = HashingEmbedder()
    now = time.time_ns()
    traces = add_calls(store, 0, 1000, now - 1000 * 10**6, step_ns=10**6)
    registry = CollectorRegistry()
    metrics = DetectorMetrics(registry)
    # Every waiting call has waited longer than allowed: one batch samples all of them.
    overloaded = job(store, hashing, batch=100, max_lag_seconds=1e-6, metrics=metrics)
    outcome = overloaded.run_once()
    assert (outcome.embedded, outcome.skipped, outcome.pending) == (100, 900, 0)
    assert registry.get_sample_value("driftline_embedding_skipped_calls_total") == 900
    assert registry.get_sample_value("driftline_embedded_calls_total") == 100
    assert registry.get_sample_value("driftline_detector_pending_calls") == 0
    assert registry.get_sample_value("driftline_detector_lag_seconds") == 0
    sampled = {row["trace_id"] for row in store.query("SELECT trace_id FROM call_vectors")}
    positions = np.array(sorted(traces.index(t) for t in sampled))
    # Uniform over the backlog, not its oldest part: each tenth holds about a tenth.
    counts = np.bincount(positions // 100, minlength=10)
    assert counts.min() >= 2 and counts.max() <= 25, counts
    assert overloaded.run_once().embedded == 0  # the rest was skipped, not left waiting

    # Within the allowed lag, calls are embedded in arrival order, every one.
    add_calls(store, 5000, 250, time.time_ns() - 10**9)
    calm = job(store, hashing, batch=100, metrics=metrics)
    first = calm.run_once()
    assert (first.embedded, first.skipped, first.pending) == (100, 0, 150)
    assert registry.get_sample_value("driftline_detector_pending_calls") == 150
    assert calm.backfill() == 150


def test_two_models_never_meet(store: Store) -> None:
    one, two = HashingEmbedder(64), HashingEmbedder(128)
    now = time.time_ns()
    add_calls(store, 0, 80, now - 200 * 10**9)
    assert job(store, one).backfill() == 80
    reference = create_reference(store, "alpha", "ref", limit=60)
    add_calls(store, 1000, 60, now - 60 * 10**9)
    assert job(store, one).backfill() == 60
    settings = DetectorSettings(
        window_calls=50, permutations=20, tests=("centroid",), embed_settle_seconds=0,
        embed_lookback_hours=0.01,
    )  # fmt: skip
    # A second model starts from its own watermark, which does not reach the first calls; the
    # reference's are embedded again for it when it is loaded.
    runner = Runner(store, settings, two)
    (outcome,) = runner.run_once()
    assert outcome.n_current == 50
    assert vector_counts(store, two.name) == (60 + 60, 120)
    params = {"first": reference.first_ns}
    where = "c.start_time >= fromUnixTimestamp64Nano({first:Int64}, 'UTC')"
    assert load_calls(store, "alpha", one.name, where, params).prompts.shape == (140, 64)
    both = load_calls(store, "alpha", two.name, where, params)
    assert both.prompts.shape == (120, 128)
    assert both.column("output_text")[0] == "answer 0 on topic 0 in words"


def planned_rows(store: Store, sql: str, params: dict) -> int:
    return sum(int(r["rows"]) for r in store.query(f"EXPLAIN ESTIMATE {sql}", params))


@pytest.mark.parametrize("history", [30_000])
def test_a_pass_reads_what_its_window_needs_not_the_history(store: Store, history: int) -> None:
    """Every query of a detector pass, planned by ClickHouse: the rows it reads stay the same
    when the history behind the window grows from nothing to many times the window."""
    hashing = HashingEmbedder(16)
    now = time.time_ns()
    settings = DetectorSettings(
        window_calls=200, permutations=20, tests=("centroid",), embed_settle_seconds=0,
        per_version_references=True, version_reference_calls=200,
    )  # fmt: skip

    def one_pass(start: int) -> dict[str, int]:
        add_calls(store, start, 200, time.time_ns() - 5 * 10**9, step_ns=10**6,
                  service_version=["1.0"] * 200)  # fmt: skip
        recording = RecordingStore(store)
        runner = Runner(recording, settings, hashing)
        runner.run_once()
        return {sql: planned_rows(store, sql, params) for sql, params in recording.selects}

    add_calls(store, 0, 400, now - 3600 * 10**9, service_version=["1.0"] * 400)
    Runner(store, settings, hashing).run_once()
    small = one_pass(10_000)
    # History: many times the window, older than the window, all of it embedded.
    store.command(
        "INSERT INTO llm_calls (project_id, trace_id, span_id, start_time, service, "
        "service_version, operation, input_text, output_text) "
        "SELECT 'alpha', lower(hex(MD5(toString(number)))), substring(lower(hex(MD5("
        "concat('s', toString(number))))), 1, 16), fromUnixTimestamp64Nano(toInt64({t:Int64}) "
        "- toInt64(number) * 1000000000, 'UTC'), 'bot', '1.0', 'chat', 'q', 'a' "
        "FROM numbers({n:UInt64})",
        {"t": now - 2 * 3600 * 10**9, "n": history},
    )
    job(store, hashing, batch=20_000, max_lag_seconds=3600).backfill()
    large = one_pass(20_000)
    assert sum(large.values()) <= sum(small.values()) + 3 * 8192, (small, large)


def test_a_data_folder_from_before_keeps_working(tmp_path: Path) -> None:
    """A folder made before call_vectors (migration 7): its reference gets its time span from
    its calls, and its calls are embedded again by the new model when the reference loads."""
    store = open_store(tmp_path / "data")
    try:
        migrate_to(store, 7)
        upgrade_a_folder_at_migration_7(store)
    finally:
        store.close()


def upgrade_a_folder_at_migration_7(store: Store) -> None:
    old = HashingEmbedder(32)
    now = time.time_ns()
    traces = add_calls(store, 0, 80, now - 200 * 10**9)
    store.insert_arrow(
        "call_embeddings",
        pa.table(
            {
                "project_id": ["alpha"] * 80,
                "trace_id": traces,
                "span_id": [f"{i:016x}" for i in range(80)],
                "start_time": pa.array(
                    [now - (200 - i) * 10**9 for i in range(80)], pa.timestamp("ns", "UTC")
                ),
                "model": [old.name] * 80,
                "prompt_vector": pa.array(list(old.encode(["q"] * 80)), pa.list_(pa.float32())),
                "response_vector": pa.array(list(old.encode(["a"] * 80)), pa.list_(pa.float32())),
            }
        ),
    )
    store.command(
        "INSERT INTO drift_references (project_id, name, version, scope, selector, calls) "
        "VALUES ('alpha', 'before', 1, map(), '{}', 60)"
    )
    store.insert_arrow(
        "reference_calls",
        pa.table(
            {
                "project_id": ["alpha"] * 60,
                "name": ["before"] * 60,
                "version": pa.array([1] * 60, pa.uint32()),
                "trace_id": traces[:60],
                "span_id": [f"{i:016x}" for i in range(60)],
            }
        ),
    )
    assert migrate(store) == [m.version for m in migrations() if m.version >= 8]
    (reference,) = list_references(store)
    assert reference.first_ns == now - 200 * 10**9
    assert reference.last_ns == now - 141 * 10**9
    add_calls(store, 1000, 60, now - 60 * 10**9)
    new = HashingEmbedder(48)
    settings = DetectorSettings(
        window_calls=50, permutations=20, tests=("centroid",), embed_settle_seconds=0,
        embed_lookback_hours=0.01,
    )  # fmt: skip
    (outcome,) = Runner(store, settings, new).run_once()
    assert outcome.n_current == 50
    assert vector_counts(store, new.name) == (120, 120)  # the reference's 60 and the new 60


def test_the_daily_review_budget_holds_across_windows(store: Store) -> None:
    hashing = HashingEmbedder()
    now = time.time_ns()
    add_calls(store, 0, 100, now - 400 * 10**9)
    refusals = ["I'm sorry, but I can't help with that request."] * 100
    add_calls(store, 1000, 100, now - 200 * 10**9, output_text=refusals)
    settings = DetectorSettings(
        window_calls=50, permutations=20, tests=("centroid",), embed_settle_seconds=0,
        review_daily_budget=30, audit_rate=0.0, per_version_references=False,
    )  # fmt: skip
    runner = Runner(store, settings, hashing)
    runner.embed()
    create_reference(store, "alpha", "ref", limit=100)
    first, second = runner.test()
    assert first.flagged == second.flagged == 50
    assert (first.queued, second.queued) == (30, 0)  # the day's budget is spent
    # every flagged call is recorded with its reasons all the same (the live A/B counts them)
    (recorded,) = store.query(
        "SELECT uniqExact(trace_id, span_id) AS calls, groupUniqArrayArray(reasons) AS reasons "
        "FROM call_flags WHERE project_id = 'alpha'"
    )
    assert recorded["calls"] == first.flagged + second.flagged and recorded["reasons"]
