"""Models API: the registry of model versions (current, promote, rollback) and fine-tune runs
with their curves. A fine-tune run by the CLI against a running collector records through the
PUT and POST routes here, since the collector owns the store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import AdminKey, ReadKey
from driftline.api.runtime import ApiError, runtime
from driftline.finetune import registry
from driftline.finetune.records import (
    RUN_STATUSES,
    VERSION_STATUSES,
    ModelVersion,
    Run,
    StoreLedger,
    VersionError,
    read_curves,
)
from driftline.store.keys import Principal

router = APIRouter(prefix="/api", tags=["models"])


def _ledger(request: Request, principal: Principal) -> StoreLedger:
    return StoreLedger(runtime(request).store, principal.project or "")


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_id: str
    method: str
    base_model: str
    output: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: str = Field(description=" | ".join(RUN_STATUSES))
    error: str = ""
    step: int = Field(0, ge=0)
    total_steps: int = Field(0, ge=0)
    summary: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float


class VersionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    status: str = Field(description=" | ".join(VERSION_STATUSES))
    base_version: str = ""
    run_id: str = ""
    snapshot_id: str = ""
    method: str = ""
    verdict: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    figures: dict[str, float]


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="promote without a passing verdict")


def _version_out(v: ModelVersion, current: ModelVersion | None) -> dict[str, Any]:
    return {**v.to_json(), "current": current is not None and v.version == current.version}


@router.get("/models", summary="Model versions, oldest first, with the current one marked")
def get_models(request: Request, principal: ReadKey) -> dict[str, Any]:
    ledger = _ledger(request, principal)
    now = registry.current(ledger)
    return {"items": [_version_out(v, now) for v in ledger.versions()]}


@router.get("/models/current", summary="The model version in service")
def get_current(request: Request, principal: ReadKey) -> dict[str, Any]:
    now = registry.current(_ledger(request, principal))
    if now is None:
        raise ApiError(404, f"project {principal.project!r} has no promoted model yet")
    return _version_out(now, now)


@router.put("/models/{version}", summary="Record a version's state (the fine-tune CLI)")
def put_model(
    request: Request, principal: AdminKey, version: str, body: VersionBody
) -> dict[str, Any]:
    if body.status not in VERSION_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(VERSION_STATUSES)}")
    ledger = _ledger(request, principal)
    ledger.save_version(ModelVersion(project=ledger.project, version=version, **body.model_dump()))
    return {"version": version}


@router.post("/models/{version}/promote", summary="Make a version current")
def promote(
    request: Request, principal: AdminKey, version: str, body: Promotion | None = None
) -> dict[str, Any]:
    ledger = _ledger(request, principal)
    try:
        done = registry.promote(ledger, version, force=body.force if body else False)
    except VersionError as exc:
        status = 404 if str(exc).startswith("no model version") else 409
        raise ApiError(status, str(exc)) from None
    return _version_out(done, done)


@router.post("/models/rollback", summary="Take the current version out of service")
def rollback(request: Request, principal: AdminKey) -> dict[str, Any]:
    ledger = _ledger(request, principal)
    try:
        back, now = registry.rollback(ledger)
    except VersionError as exc:
        raise ApiError(409, str(exc)) from None
    return {"rolled_back": back.to_json(), "current": _version_out(now, now)}


@router.get("/finetune-runs", summary="Fine-tune runs, newest first")
def get_runs(
    request: Request, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    runs = _ledger(request, principal).runs()[:limit]
    return {"items": [r.to_json() for r in runs]}


@router.get("/finetune-runs/{run_id}", summary="One run with its curves over steps")
def get_run(request: Request, principal: ReadKey, run_id: str) -> dict[str, Any]:
    ledger = _ledger(request, principal)
    found = ledger.runs(run_id)
    if not found:
        raise ApiError(404, f"no fine-tune run {run_id!r} in project {principal.project!r}")
    curves = read_curves(ledger.store, ledger.project, run_id)
    return {**found[0].to_json(), "curves": {k: [list(p) for p in v] for k, v in curves.items()}}


@router.put("/finetune-runs/{run_id}", summary="Record a run's state (the fine-tune CLI)")
def put_run(request: Request, principal: AdminKey, run_id: str, body: RunBody) -> dict[str, Any]:
    if body.status not in RUN_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(RUN_STATUSES)}")
    ledger = _ledger(request, principal)
    ledger.save_run(Run(id=run_id, project=ledger.project, **body.model_dump()))
    return {"id": run_id}


@router.post("/finetune-runs/{run_id}/metrics", status_code=201, summary="A step's figures")
def post_metrics(
    request: Request, principal: AdminKey, run_id: str, body: Metrics
) -> dict[str, Any]:
    _ledger(request, principal).save_metrics(run_id, body.step, body.figures)
    return {"run_id": run_id, "step": body.step}
