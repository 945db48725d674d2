"""References API: freeze calls as a reference version, and list the latest of each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import HeavyAdminKey, ReadKey
from driftline.api.runtime import ApiError, runtime
from driftline.detectors.references import (
    MIN_CALLS,
    DriftReferenceError,
    Reference,
    create_reference,
    list_references,
)

router = APIRouter(prefix="/api", tags=["drift"])


class NewReference(BaseModel):
    """Freeze calls as a reference: a time range, or the first `limit` calls after `since`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w.:@-]+$")
    service: str | None = None
    model: str | None = None
    agent: str | None = None
    version: str | None = Field(None, description="only calls of this service.version")
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = Field(None, ge=MIN_CALLS, le=1_000_000)


@router.post("/references", status_code=201, summary="Freeze a new reference version")
def post_reference(
    request: Request, principal: HeavyAdminKey, body: NewReference
) -> dict[str, Any]:
    assert principal.project is not None
    scope = {
        "service": body.service,
        "model": body.model,
        "agent": body.agent,
        "version": body.version,
    }
    try:
        reference = create_reference(
            runtime(request).store,
            principal.project,
            body.name,
            {k: v for k, v in scope.items() if v},
            since=body.since,
            until=body.until,
            limit=body.limit,
        )
    except DriftReferenceError as exc:
        raise ApiError(400, str(exc)) from None
    return _reference(reference)


@router.get("/references", summary="The latest version of each reference")
def get_references(request: Request, principal: ReadKey) -> dict[str, Any]:
    return {
        "items": [_reference(r) for r in list_references(runtime(request).store, principal.project)]
    }


def _reference(reference: Reference) -> dict[str, Any]:
    return {
        "name": reference.name,
        "version": reference.version,
        "scope": reference.scope,
        "selector": reference.selector,
        "calls": reference.calls,
        "created_at": reference.created_at,
    }
