"""Fine-tune runs API: runs with their curves; the fine-tune CLI records through PUT and POST."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import AdminKey, ReadKey
from driftline.api.routes.common import UINT32_MAX, UnixSeconds, project_ledger
from driftline.api.runtime import ApiError
from driftline.finetune.ledger import RUN_STATUSES, Run
from driftline.finetune.tables import read_curves

router = APIRouter(prefix="/api", tags=["models"])


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_id: str
    method: str
    base_model: str
    output: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: str = Field(description=" | ".join(RUN_STATUSES))
    error: str = ""
    step: int = Field(0, ge=0, le=UINT32_MAX)
    total_steps: int = Field(0, ge=0, le=UINT32_MAX)
    summary: dict[str, Any] = Field(default_factory=dict)
    created_at: UnixSeconds
    updated_at: UnixSeconds


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, le=UINT32_MAX)
    figures: dict[str, float]


@router.get("/finetune-runs", summary="Fine-tune runs, newest first")
def get_runs(
    request: Request, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    runs = project_ledger(request, principal).runs()[:limit]
    return {"items": [r.to_json() for r in runs]}


@router.get("/finetune-runs/{run_id}", summary="One run with its curves over steps")
def get_run(request: Request, principal: ReadKey, run_id: str) -> dict[str, Any]:
    ledger = project_ledger(request, principal)
    found = ledger.runs(run_id)
    if not found:
        raise ApiError(404, f"no fine-tune run {run_id!r} in project {principal.project!r}")
    curves = read_curves(ledger.store, ledger.project, run_id)
    return {**found[0].to_json(), "curves": {k: [list(p) for p in v] for k, v in curves.items()}}


@router.put("/finetune-runs/{run_id}", summary="Record a run's state (the fine-tune CLI)")
def put_run(request: Request, principal: AdminKey, run_id: str, body: RunBody) -> dict[str, Any]:
    if body.status not in RUN_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(RUN_STATUSES)}")
    ledger = project_ledger(request, principal)
    ledger.save_run(Run(id=run_id, project=ledger.project, **body.model_dump()))
    return {"id": run_id}


@router.post("/finetune-runs/{run_id}/metrics", status_code=201, summary="A step's figures")
def post_metrics(
    request: Request, principal: AdminKey, run_id: str, body: Metrics
) -> dict[str, Any]:
    project_ledger(request, principal).save_metrics(run_id, body.step, body.figures)
    return {"run_id": run_id, "step": body.step}
