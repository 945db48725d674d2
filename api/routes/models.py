"""Models API: the registry of model versions (current, promote, rollback)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import AdminKey, ReadKey
from driftline.api.routes.common import UnixSeconds, project_ledger
from driftline.api.runtime import ApiError, runtime
from driftline.finetune import registry
from driftline.finetune.ledger import VERSION_STATUSES, ModelVersion, VersionError

router = APIRouter(prefix="/api", tags=["models"])


class VersionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    status: str = Field(description=" | ".join(VERSION_STATUSES))
    base_version: str = ""
    run_id: str = ""
    snapshot_id: str = ""
    method: str = ""
    verdict: dict[str, Any] = Field(default_factory=dict)
    created_at: UnixSeconds
    updated_at: UnixSeconds


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="promote without a passing verdict")


def _version_out(v: ModelVersion, current: ModelVersion | None) -> dict[str, Any]:
    return {**v.to_json(), "current": current is not None and v.version == current.version}


@router.get("/models", summary="Model versions, oldest first, with the current one marked")
def get_models(request: Request, principal: ReadKey) -> dict[str, Any]:
    ledger = project_ledger(request, principal)
    now = registry.current(ledger)
    return {"items": [_version_out(v, now) for v in ledger.versions()]}


@router.get("/models/current", summary="The model version in service")
def get_current(request: Request, principal: ReadKey) -> dict[str, Any]:
    now = registry.current(project_ledger(request, principal))
    if now is None:
        raise ApiError(404, f"project {principal.project!r} has no promoted model yet")
    return _version_out(now, now)


@router.put("/models/{version}", summary="Record a version's state (the fine-tune CLI)")
def put_model(
    request: Request, principal: AdminKey, version: str, body: VersionBody
) -> dict[str, Any]:
    if body.status not in VERSION_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(VERSION_STATUSES)}")
    root = runtime(request).settings.finetune.models_root
    try:
        path = registry.confined(body.path, root)
    except VersionError as exc:
        raise ApiError(400, str(exc)) from None
    ledger = project_ledger(request, principal)
    fields = {**body.model_dump(), "path": path}
    ledger.save_version(ModelVersion(project=ledger.project, version=version, **fields))
    return {"version": version}


@router.post("/models/{version}/promote", summary="Make a version current")
def promote(
    request: Request, principal: AdminKey, version: str, body: Promotion | None = None
) -> dict[str, Any]:
    ledger = project_ledger(request, principal)
    try:
        done = registry.promote(ledger, version, force=body.force if body else False)
    except VersionError as exc:
        status = 404 if str(exc).startswith("no model version") else 409
        raise ApiError(status, str(exc)) from None
    return _version_out(done, done)


@router.post("/models/rollback", summary="Take the current version out of service")
def rollback(request: Request, principal: AdminKey) -> dict[str, Any]:
    ledger = project_ledger(request, principal)
    try:
        back, now = registry.rollback(ledger)
    except VersionError as exc:
        raise ApiError(409, str(exc)) from None
    return {"rolled_back": back.to_json(), "current": _version_out(now, now)}
