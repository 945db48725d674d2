"""Evaluators API: the online evaluators configured, and what each did today for the project."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from driftline.api.auth import ReadKey
from driftline.api.config import Settings
from driftline.api.runtime import ApiError, runtime
from driftline.evaluators.agreement import Bar, judge_trust, judges_table
from driftline.evaluators.experiments import experiments
from driftline.evaluators.tables import DayTotal, project_totals
from driftline.store import Store

router = APIRouter(prefix="/api", tags=["evaluators"])


@router.get("/evaluators", summary="The online evaluators and their day so far (UTC)")
def list_evaluators(request: Request, principal: ReadKey) -> dict[str, Any]:
    assert principal.project is not None
    rt = runtime(request)
    today = datetime.now(UTC).date()
    totals = project_totals(rt.store, principal.project, today)
    items = []
    for name, config in sorted(rt.settings.evaluators.items()):
        if not config.grades(principal.project):
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


@router.get(
    "/evaluators/{name}/agreement",
    summary="How far people agree with a judge, per criterion, over its agreement window",
)
def evaluator_agreement(request: Request, principal: ReadKey, name: str) -> dict[str, Any]:
    assert principal.project is not None
    rt = runtime(request)
    config = rt.settings.evaluators.get(name)
    if config is None or not config.grades(principal.project):
        raise ApiError(404, f"no evaluator {name!r} for this project")
    if config.kind != "llm_judge":
        raise ApiError(
            400, f"{name!r} is a built-in check ({config.kind}): only judges are audited"
        )
    user = f"{name}@{config.version}"
    trust = judge_trust(rt.store, principal.project, user, Bar.of(config), time.time_ns())
    return {
        "evaluator": name,
        "version": config.version,
        "user": user,
        "days": config.agreement_days,
        "min_spearman": config.min_spearman,
        "min_audited": config.min_audited,
        "trusted": trust.trusted,
        "criteria": [asdict(c) for c in trust.criteria],
    }


@router.get(
    "/experiments",
    summary="Model versions compared on live traffic (sdk.choose_version), with their verdicts",
)
def list_experiments(request: Request, principal: ReadKey) -> dict[str, Any]:
    assert principal.project is not None
    rt = runtime(request)
    trusted, items = live_comparisons(rt.store, principal.project, rt.settings)
    return {"trusted_judges": trusted, "days": rt.settings.experiments.days, "items": items}


def live_comparisons(
    store: Store, project: str, settings: Settings
) -> tuple[list[str], list[dict[str, Any]]]:
    """The project's trusted judges (NAME@VERSION), and its experiments compared with them."""
    now = time.time_ns()
    judges = judges_table(store, project, settings.evaluators, now)
    trusted = [judge["user"] for judge in judges if judge["trusted"] is True]
    checks = [
        f"{name}@{config.version}"
        for name, config in sorted(settings.evaluators.items())
        if config.kind != "llm_judge" and config.grades(project)
    ]
    return trusted, experiments(store, project, settings.experiments, trusted, now, checks)
