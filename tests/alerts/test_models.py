"""Model versions in the loop: a promotion, a gate rejection or a rollback in the fine-tune
registry fires an alert-style notification through the usual rules and routes."""

from __future__ import annotations

import time
from pathlib import Path

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
