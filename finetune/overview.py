"""The review overview's fine-tune part: each recent run's curves and the model registry."""

from __future__ import annotations

from typing import Any

from driftline.finetune import tables
from driftline.finetune.ledger import read_versions
from driftline.finetune.registry import in_service
from driftline.review.charts import line_chart
from driftline.review.overview import series
from driftline.store import Store


def charts(store: Store, project: str, days: int) -> list[str]:
    """Each recent run's loss and reward margin over its training time."""
    rows = tables.training_curves(store, project, days)
    return [
        line_chart(f"Fine-tunes: {title} while training", series(
            [r for r in rows if r["name"] == name], "run", "value"
        ))
        for name, title in (("loss", "loss"), ("reward_margin", "reward margin"))
    ]  # fmt: skip


def model_versions(store: Store, project: str) -> list[dict[str, Any]]:
    """The registry with the gate's figures, newest first; `current` marks the one in service."""
    versions = read_versions(store, project)
    current = in_service(versions)
    out = []
    for v in reversed(versions):
        win = v.verdict.get("win_rate") or {}
        out.append(
            {
                "version": v.version,
                "status": v.status,
                "current": current is not None and v.version == current.version,
                "method": v.method or "registered",
                "win_rate": win.get("rate"),
                "low": win.get("low"),
                "high": win.get("high"),
                "n": win.get("n"),
                "source": win.get("source", ""),
                "accuracy": v.verdict.get("preference_accuracy"),
                "reasons": v.verdict.get("reasons", []),
                "path": v.path,
            }
        )
    return out
