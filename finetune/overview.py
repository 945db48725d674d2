"""The review overview's fine-tune part: each recent run's curves and the model registry."""

from __future__ import annotations

from typing import Any

from driftline.finetune.records import read_versions
from driftline.finetune.registry import in_service
from driftline.review.charts import line_chart
from driftline.review.overview import series
from driftline.store import Store


def charts(store: Store, project: str, days: int) -> list[str]:
    """Each recent run's loss and reward margin over its training time."""
    rows = store.query(
        "SELECT concat(r.method, ' ', substring(m.run_id, 1, 8)) AS run, m.name AS name, "
        "toUnixTimestamp(m.at) AS t, m.value AS value FROM finetune_metrics AS m FINAL "
        "JOIN (SELECT id, method FROM finetune_runs FINAL WHERE project_id = {p:String}) AS r "
        "ON r.id = m.run_id WHERE m.project_id = {p:String} "
        "AND m.name IN ('loss', 'reward_margin') AND m.at > now() - toIntervalDay({days:UInt32}) "
        "ORDER BY t, m.step",
        {"p": project, "days": days},
    )
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
