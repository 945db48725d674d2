"""Key administration: what `driftline keys` calls when a server holds the data folder."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from driftline.api.auth import OperatorKey
from driftline.api.runtime import ApiError, runtime
from driftline.store import keys
from driftline.store.keys import Principal

router = APIRouter(prefix="/api/admin", tags=["admin"])


class NewKey(BaseModel):
    project: str = Field(description="project the key belongs to; created if missing")
    role: str = Field(description="ingest, read or admin")
    name: str = ""


def _scope(principal: Principal, project: str | None) -> str | None:
    """An admin key acts on its own project only; the operator token on any."""
    if principal.project is None:
        return project
    if project and project != principal.project:
        raise ApiError(403, f"this key belongs to project {principal.project!r}, not {project!r}")
    return principal.project


@router.post("/keys", status_code=201, summary="Create a key")
def create_key(request: Request, principal: OperatorKey, body: NewKey) -> dict[str, Any]:
    project = _scope(principal, body.project)
    assert project is not None
    try:
        key_id, key = keys.create_key(runtime(request).store, project, body.role, body.name)
    except keys.KeysError as exc:
        raise ApiError(400, str(exc)) from None
    return {"key_id": key_id, "key": key, "project": project, "role": body.role}


@router.get("/keys", summary="List keys (never the keys themselves)")
def list_keys(
    request: Request, principal: OperatorKey, project: str | None = None
) -> dict[str, Any]:
    return {"items": keys.list_keys(runtime(request).store, _scope(principal, project))}


@router.delete("/keys/{key_id}", summary="Revoke a key")
def revoke_key(request: Request, principal: OperatorKey, key_id: str) -> dict[str, Any]:
    try:
        return keys.revoke_key(runtime(request).store, key_id, _scope(principal, None))
    except keys.KeysError as exc:
        raise ApiError(404, str(exc)) from None
