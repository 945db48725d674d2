"""Per-version references on chDB: a new `service.version` freezes its own reference from its
first calls, once, and its windows are tested against it."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from driftline.cli.commands import main
from driftline.detectors.config import DetectorSettings
from driftline.detectors.embedder import Embedder
from driftline.detectors.embeddings import EmbeddingJob
from driftline.detectors.references import create_reference, list_references
from driftline.detectors.runner import Runner
from driftline.detectors.versions import reference_name, version_references
from driftline.store import Store, migrate, open_store
from tests.conftest import Collector
from tests.detectors.conftest import BASE_NS, MIX, texts

N = 60
LOOKBACK_HOURS = 24 * 3650
SHIFT = ("games", "fonts", "golang")


class HashingEmbedder(Embedder):
    """Signed feature-hashed bag of words: a real text embedding that needs no model."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.batch_size = 512
        self.name = f"hashing-{dimension}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest())
                vectors[row, digest % self.dimension] += 1.0 if digest >> 63 else -1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-9)


@pytest.fixture(scope="module")
def hashing() -> HashingEmbedder:
    return HashingEmbedder()


def mixed(sections: tuple[str, ...], per_section: int, skip: int = 0) -> list[tuple[str, str]]:
    """The fixture's pairs of these sections, topics shuffled together in a fixed order."""
    pairs = texts(sections, per_section, skip)
    return [pairs[i] for i in np.random.default_rng(1).permutation(len(pairs))]


def settings(**overrides: Any) -> DetectorSettings:
    return DetectorSettings(
        **{
            "version_reference_calls": N,
            "window_calls": 40,
            "permutations": 50,
            "tests": ("centroid",),
            "audit_rate": 0.0,
            # The calls started in September (BASE_NS) and arrive now, all at once.
            "embed_lookback_hours": LOOKBACK_HOURS,
            "embed_settle_seconds": 0,
            **overrides,
        }
    )


def add_calls(
    store: Store,
    pairs: list[tuple[str, str]],
    seconds: Sequence[int],
    service: str = "chat",
    version: str = "1.0",
    project: str = "alpha",
) -> list[str]:
    """Store calls (pair i at BASE + seconds[i]); returns their trace ids."""
    n = len(pairs)
    ids = [hashlib.md5(f"{project}{service}{version}{s}".encode()).hexdigest() for s in seconds]
    times = pa.array([BASE_NS + s * 10**9 for s in seconds], pa.timestamp("ns", "UTC"))
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": [project] * n,
                "trace_id": ids,
                "span_id": [i[:16] for i in ids],
                "start_time": times,
                "end_time": times,
                "service": [service] * n,
                "service_version": [version] * n,
                "response_model": ["m1"] * n,
                "operation": ["chat"] * n,
                "input_text": [p for p, _ in pairs],
                "output_text": [a for _, a in pairs],
                "duration_ms": [800.0 + (i % 7) * 10 for i in range(n)],
                "output_tokens": pa.array([120 + i % 11 for i in range(n)], pa.uint32()),
                "finish_reasons": [["stop"]] * n,
            }
        ),
    )
    return ids


def embedding(store: Store, hashing: HashingEmbedder, batch: int = 512) -> EmbeddingJob:
    return EmbeddingJob(
        store, hashing, batch, lookback_seconds=LOOKBACK_HOURS * 3600, settle_seconds=0
    )


def members(store: Store, name: str) -> set[str]:
    rows = store.query("SELECT trace_id FROM reference_calls WHERE name = {n:String}", {"n": name})
    return {r["trace_id"] for r in rows}


def runs(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT reference, reference_version AS v, n_reference, n_current, "
        "toUnixTimestamp64Nano(window_start) AS start_ns, "
        "toUnixTimestamp64Nano(window_end) AS end_ns "
        "FROM detector_runs FINAL ORDER BY reference, window_end"
    )


def test_each_new_version_gets_its_reference_and_its_windows(
    store: Store, hashing: HashingEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = mixed(MIX, 20)  # 100 answers on five topics
    # Stored out of time order, so "first" has to mean first by time, not by arrival.
    late = add_calls(store, pairs[50:], range(50, 100))
    early = add_calls(store, pairs[:50], range(50))
    add_calls(store, [(p, "") for p, _ in pairs[:5]], range(-10, -5))  # no answer: not counted
    add_calls(store, pairs[:30], range(200, 230), service="other")  # too few for other@1.0
    add_calls(store, pairs[:N], range(300, 300 + N), version="")  # no version: no reference

    runner = Runner(store, settings(), hashing)
    with caplog.at_level(logging.INFO, "driftline.detectors"):
        (window,) = runner.run_once()
    (reference,) = list_references(store)
    assert (reference.name, reference.version, reference.calls) == ("chat@1.0", 1, N)
    assert reference.scope == {"service": "chat", "version": "1.0"}
    assert reference.selector["limit"] == N
    assert reference.selector["since"] == "2026-09-21T14:13:20+00:00"  # the first answer's time
    assert members(store, "chat@1.0") == set(early + late[:10])
    new = [r for r in caplog.records if r.levelno == logging.INFO and "chat@1.0" in r.message]
    assert len(new) == 1
    assert (window.reference, window.n_current) == ("chat@1.0", 40)

    assert runner.run_once() == []
    assert Runner(store, settings(), hashing).run_once() == []  # a restart: the table remembers
    assert [(r.name, r.version) for r in list_references(store)] == [("chat@1.0", 1)]

    # Version 1.1 answers other topics; 1.0 keeps serving part of the traffic meanwhile.
    shifted = add_calls(store, mixed(SHIFT, 34)[:100], range(1000, 1200, 2), version="1.1")
    add_calls(store, mixed(MIX, 8, 20), range(1001, 1081, 2))
    outcomes = runner.run_once()
    assert [(r.name, r.scope) for r in list_references(store)] == [
        ("chat@1.0", {"service": "chat", "version": "1.0"}),
        ("chat@1.1", {"service": "chat", "version": "1.1"}),
    ]
    assert members(store, "chat@1.1") == set(shifted[:N])
    assert sorted((o.reference, o.n_current) for o in outcomes) == [
        ("chat@1.0", 40),
        ("chat@1.1", 40),
    ]
    second = 10**9
    assert runs(store) == [
        {"reference": "chat@1.0", "v": 1, "n_reference": N, "n_current": 40,
         "start_ns": BASE_NS + 60 * second, "end_ns": BASE_NS + 99 * second},
        {"reference": "chat@1.0", "v": 1, "n_reference": N, "n_current": 40,
         "start_ns": BASE_NS + 1001 * second, "end_ns": BASE_NS + 1079 * second},
        # 1.1's windows start after its own first N calls, and hold 1.1's calls alone
        {"reference": "chat@1.1", "v": 1, "n_reference": N, "n_current": 40,
         "start_ns": BASE_NS + 1120 * second, "end_ns": BASE_NS + 1198 * second},
    ]  # fmt: skip
    vs_own = next(o for o in outcomes if o.reference == "chat@1.1")
    assert not vs_own.drifting  # against chat@1.0 this window drifts (centroid p ≈ 0.02)


def freeze(store: Store, embedder: Any, per_project: int = 50, full: set[str] | None = None) -> Any:
    """One pass of per-version references, `per_project` at most."""
    return version_references(store, N, embedder.name, per_project, set() if full is None else full)


def test_a_project_gets_at_most_its_cap_of_version_references(
    store: Store, hashing: HashingEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    # Versions come from spans: a sender can make a new one per call. Each project has a cap.
    pairs = texts(MIX, 20, 0)[:N]
    for i, version in enumerate(("1", "2", "3")):  # in this order
        add_calls(store, pairs, range(i * 1000, i * 1000 + N), version=version)
    add_calls(store, pairs, range(N), version="1", project="beta")
    embedding(store, hashing).backfill()
    full: set[str] = set()
    made = freeze(store, hashing, per_project=2, full=full)
    assert sorted((r.project, r.name) for r in made) == [
        ("alpha", "chat@1"), ("alpha", "chat@2"), ("beta", "chat@1"),
    ]  # fmt: skip
    assert full == {"alpha"}
    assert freeze(store, hashing, per_project=2) == []  # the table remembers the count
    with caplog.at_level(logging.WARNING, "driftline.detectors"):
        runner = Runner(store, settings(max_version_references=2), hashing)
        runner.run_once()
        runner.run_once()
    warned = [r.message for r in caplog.records if "max_version_references" in r.message]
    assert warned == [
        "project alpha has 2 per-version references (detectors.max_version_references): "
        "new versions get none"
    ]  # once, not every pass


def test_a_version_waits_for_its_first_n_calls(store: Store, hashing: HashingEmbedder) -> None:
    pairs = texts(MIX, 20, 0)
    add_calls(store, pairs[: N - 1], range(N - 1), version="2.0")
    add_calls(store, pairs[: N - 1], range(N - 1), service="", version="2.0")
    embedding(store, hashing).backfill()
    assert freeze(store, hashing) == []  # not a smaller one meanwhile
    assert list_references(store) == []

    add_calls(store, pairs[N - 1 : N + 20], range(N - 1, N + 20), version="2.0")
    add_calls(store, [pairs[N - 1]], [N - 1], service="", version="2.0")
    embedding(store, hashing).backfill()
    made = freeze(store, hashing)
    assert [(r.name, r.scope, r.calls) for r in made] == [
        ("chat@2.0", {"service": "chat", "version": "2.0"}, N),
        ("@2.0", {"service": "", "version": "2.0"}, N),  # calls without a service, only
    ]
    assert members(store, "chat@2.0").isdisjoint(members(store, "@2.0"))
    assert freeze(store, hashing) == []


def test_a_version_waits_for_its_calls_to_be_embedded(
    store: Store, hashing: HashingEmbedder
) -> None:
    add_calls(store, mixed(MIX, 20), range(100), version="2.5")
    job = embedding(store, hashing, batch=50)
    job.run_once()  # half embedded: the reference would be tested on 50 of its 60 calls
    assert freeze(store, hashing) == []
    job.run_once()
    (made,) = freeze(store, hashing)
    assert (made.name, made.calls) == ("chat@2.5", N)


def test_hand_made_references_of_a_version_are_kept(store: Store, hashing: HashingEmbedder) -> None:
    pairs = texts(MIX, 20, 0)
    add_calls(store, pairs, range(100), version="3.0")
    add_calls(store, pairs, range(100), version="3.1")
    embedding(store, hashing).backfill()
    create_reference(store, "alpha", "chat-3.0", {"service": "chat", "version": "3.0"})
    create_reference(store, "alpha", "chat@3.1", {"service": "chat"})  # the name is taken
    assert freeze(store, hashing) == []
    assert [(r.name, r.version, r.calls) for r in list_references(store)] == [
        ("chat-3.0", 1, 100),
        ("chat@3.1", 1, 200),
    ]


def test_switched_off_no_reference_is_made(store: Store, hashing: HashingEmbedder) -> None:
    add_calls(store, texts(MIX, 20, 0), range(100))
    assert Runner(store, settings(per_version_references=False), hashing).run_once() == []
    assert list_references(store) == []


def test_bad_settings_say_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="version_reference_calls must be between 50"):
        DetectorSettings(version_reference_calls=10)
    with pytest.raises(ValidationError, match="per_version_references"):
        DetectorSettings(per_version_references="sometimes")  # type: ignore[arg-type]
    assert DetectorSettings().per_version_references is True


def test_long_names_stay_within_128_characters() -> None:
    assert reference_name("chat", "1.0") == "chat@1.0"
    assert reference_name("", "1.0") == "@1.0"
    long = reference_name("s" * 100, "v" * 100)
    assert len(long) == 128 and long != reference_name("s" * 100, "v" * 99 + "w")


def test_the_api_takes_a_version_scope(collector: Collector) -> None:
    store = collector.runtime.store
    add_calls(store, texts(MIX, 20, 0), range(100), version="4.0")
    add_calls(store, texts(MIX, 10, 0), range(100, 150), version="4.1")
    made = collector.client.post(
        "/api/references",
        headers={"Authorization": f"Bearer {collector.admin_key}"},
        json={"name": "chat@4.0", "service": "chat", "version": "4.0", "limit": 80},
    )
    assert made.status_code == 201, made.text
    assert (made.json()["scope"], made.json()["calls"]) == (
        {"service": "chat", "version": "4.0"},
        80,
    )


def test_the_cli_takes_a_version_scope(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    try:
        migrate(store)
        add_calls(store, texts(MIX, 20, 0), range(100), project="default", version="5.0")
        add_calls(store, texts(MIX, 10, 0), range(100, 150), project="default", version="5.1")
    finally:
        store.close()
    result = CliRunner().invoke(
        main,
        ["reference", "create", "--name", "v5", "--service-version", "5.0", "--data", str(data)],
    )
    assert result.exit_code == 0, result.output
    assert "reference v5 version 1: 100 calls, scope {'version': '5.0'}" in result.output
