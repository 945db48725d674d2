"""Model versions in the loop: a promotion, a gate rejection or a rollback in the fine-tune
registry fires an alert-style notification through the usual rules and routes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from driftline.finetune import registry
from driftline.finetune.ledger import StoreLedger
from driftline.store import Store
from tests.alerts.conftest import Clock, EngineFactory

RULES = """
rules:
  - alert: ModelPromoted
    when: {model: {status: promoted, over: 1h}}
    labels: {severity: info}
    annotations:
      summary: "{{ $labels.version }} is in service (win rate {{ $value }})"
  - alert: ModelRejected
    when: {model: {status: rejected}}
    labels: {severity: warning}
"""


def model_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def test_promotion_and_rejection_fire_and_age_out(
    store: Store, clock: Clock, make_engine: EngineFactory, tmp_path: Path
) -> None:
    clock.now = time.time() + 5  # the registry stamps versions with the wall clock
    engine = make_engine(RULES)
    ledger = StoreLedger(store, "alpha")
    assert engine.evaluate() == []

    registry.baseline(ledger, model_folder(tmp_path / "base"))  # v1, in service
    good = registry.register(ledger, model_folder(tmp_path / "good"), method="dpo")
    registry.record_verdict(
        ledger, good, {"promote": True, "win_rate": {"rate": 0.9}, "reasons": []}
    )
    bad = registry.register(ledger, model_folder(tmp_path / "bad"), method="dpo")
    registry.record_verdict(ledger, bad, {"promote": False, "win_rate": {"rate": 0.1},
                                          "reasons": ["win rate 10.0% is below 60%"]})  # fmt: skip
    registry.promote(ledger, good.version)
    clock.now = time.time() + 5

    alerts = {(a.rule, a.labels["version"]): a for a in engine.evaluate()}
    assert set(alerts) == {
        ("ModelPromoted", "v1"),
        ("ModelPromoted", "v2"),
        ("ModelRejected", "v3"),
    }
    promoted = alerts["ModelPromoted", "v2"]
    assert promoted.state == "firing" and promoted.labels["method"] == "dpo"
    assert promoted.annotations["summary"] == "v2 is in service (win rate 0.9)"
    assert promoted.evidence["path"] == str((tmp_path / "good").resolve())
    assert alerts["ModelPromoted", "v1"].labels["method"] == "registered"
    assert alerts["ModelRejected", "v3"].evidence["reasons"] == ["win rate 10.0% is below 60%"]

    clock.advance(3601)  # an hour on, the news is old
    assert {a.state for a in engine.evaluate()} == {"resolved"}


EXPERIMENT_RULES = """
rules:
  - alert: CandidateWins
    when: {experiment: {verdict: wins}}
    registry: {promote: true}
  - alert: CandidateLoses
    when: {experiment: {verdict: loses}}
    registry: {rollback: true}
"""


def serve_versions(
    store: Store, calls: dict[str, tuple[int, float]], project: str = "alpha"
) -> None:
    """Live traffic of an A/B experiment: per version, (calls, error rate), as stored calls
    whose spans carry sdk.choose_version's attributes."""
    rng = np.random.default_rng(7)
    now = time.time_ns()
    rows: dict[str, list] = {k: [] for k in ("trace_id", "span_id", "version", "error")}
    for version, (n, error_rate) in calls.items():
        for i in range(n):
            rows["trace_id"].append(f"{abs(hash(project + version)) % 10**8:08x}{i:024x}")
            rows["span_id"].append(f"{i + 1:016x}")
            rows["version"].append(version)
            rows["error"].append("error" if rng.random() < error_rate else "unset")
    n = len(rows["version"])
    times = pa.array([now - (n - i) * 10**6 for i in range(n)], pa.timestamp("ns", "UTC"))
    store.insert_arrow("llm_calls", pa.table({
        "project_id": [project] * n, "trace_id": rows["trace_id"], "span_id": rows["span_id"],
        "start_time": times, "end_time": times, "duration_ms": rng.normal(400, 50, n),
        "status_code": rows["error"], "operation": ["chat"] * n,
        "attributes": pa.array(
            [[("driftline.experiment.name", "rollout"), ("driftline.experiment.version", v)]
             for v in rows["version"]], pa.map_(pa.string(), pa.string())),
    }))  # fmt: skip


def candidate_passed_the_gate(store: Store, project: str, tmp_path: Path) -> StoreLedger:
    """The project's registry: v1 in service, v2 a candidate the gate passed."""
    ledger = StoreLedger(store, project)
    registry.baseline(ledger, model_folder(tmp_path / "base"))
    v2 = registry.register(ledger, model_folder(tmp_path / "v2"), method="dpo")
    registry.record_verdict(ledger, v2, {"promote": True, "reasons": []})
    return ledger


def firing(clock: Clock, make_engine: EngineFactory) -> set[tuple[str, str]]:
    clock.now = time.time() + 5  # the registry stamps versions with the wall clock
    alerts = make_engine(EXPERIMENT_RULES).evaluate()
    return {(a.rule, a.labels["version"]) for a in alerts if a.state == "firing"}


def test_a_live_verdict_is_recorded_and_acts_on_the_registry(
    store: Store, clock: Clock, make_engine: EngineFactory, tmp_path: Path
) -> None:
    ledger = candidate_passed_the_gate(store, "alpha", tmp_path)
    registry.promote(ledger, "v2")  # v2 serves, v1 is the earlier version
    serve_versions(store, {"v1": (600, 0.02), "v2": (300, 0.4), "v9": (300, 0.02)})
    assert ("CandidateLoses", "v2") in firing(clock, make_engine)
    # the loser in service is rolled back, its verdict kept on it; v9 is no registry version
    assert registry.current(ledger).version == "v1"
    live = registry.get(ledger, "v2").verdict["live"]
    assert live["verdict"] == "loses" and live["baseline"] == "v1" and live["calls"] == 300
    assert {m["metric"] for m in live["metrics"] if m["worse"]} == {"error_rate"}


def test_a_candidate_that_wins_live_is_promoted(
    store: Store, clock: Clock, make_engine: EngineFactory, tmp_path: Path
) -> None:
    ledger = candidate_passed_the_gate(store, "beta", tmp_path)
    serve_versions(store, {"v1": (2000, 0.0), "v2": (1500, 0.0)}, project="beta")
    assert firing(clock, make_engine) == {("CandidateWins", "v2")}
    assert registry.current(ledger).version == "v2"
    assert registry.get(ledger, "v2").verdict["live"]["verdict"] == "wins"


def test_registry_actions_need_an_experiment_condition() -> None:
    from driftline.alerts.rules import RulesError, parse_rules

    try:
        parse_rules("rules:\n  - alert: X\n    when: {model: {status: promoted}}\n"
                    "    registry: {promote: true}\n")  # fmt: skip
    except RulesError as exc:
        assert "needs when: experiment" in str(exc)
    else:
        raise AssertionError("a registry action on a model condition was accepted")
