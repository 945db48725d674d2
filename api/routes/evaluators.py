"""Evaluators API: the online evaluators configured, and what each did today for the project."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from driftline.api.auth import ReadKey
from driftline.api.runtime import runtime
from driftline.evaluators.tables import DayTotal, project_totals

router = APIRouter(prefix="/api", tags=["evaluators"])


@router.get("/evaluators", summary="The online evaluators and their day so far (UTC)")
def list_evaluators(request: Request, principal: ReadKey) -> dict[str, Any]:
    assert principal.project is not None
    rt = runtime(request)
    today = datetime.now(UTC).date()
    totals = project_totals(rt.store, principal.project, today)
    items = []
    for name, config in sorted(rt.settings.evaluators.items()):
        if config.projects and principal.project not in config.projects:
            continue
        day = totals.get((name, config.version), DayTotal())
        cap = config.daily_cost_cap_usd if config.kind == "llm_judge" else None
        items.append(
            {
                "name": name,
                "kind": config.kind,
                "version": config.version,
                "user": f"{name}@{config.version}",
                "sample_rate": config.sample_rate,
                "daily_budget": config.daily_budget,
                "daily_cost_cap_usd": cap,
                "running": rt.evaluators is not None,
                "today": {"day": today.isoformat(), "graded": day.graded, "failed": day.failed,
                          "cost_usd": round(day.cost_usd, 6)},
            }
        )  # fmt: skip
    return {"items": items}
