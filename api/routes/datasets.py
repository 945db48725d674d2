"""Datasets API: export reviewed feedback as training data, recorded as a snapshot a fine-tune
can name, and fetch a snapshot's files (rebuilt and checked against the recorded hash)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from driftline.api.auth import HeavyAdminKey, HeavyReadKey, ReadKey
from driftline.api.runtime import ApiError, runtime
from driftline.finetune.dataset.files import encode_rows
from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.formats import FORMATS
from driftline.finetune.dataset.snapshots import (
    Snapshot,
    SnapshotError,
    get_snapshot,
    list_snapshots,
    load_snapshot,
    record_snapshot,
)
from driftline.finetune.ledger import StoreLedger

router = APIRouter(prefix="/api", tags=["datasets"])


class NewDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field(description=" | ".join(FORMATS))
    since: datetime | None = None
    until: datetime | None = None
    test_fraction: float = Field(0.1, ge=0, le=1)
    kto_good: float = 4.0
    kto_bad: float = 2.0
    conversational: bool = True
    app_feedback: bool = Field(
        False, description="the apps' feedback (thumbs, app scores) too, not only reviewers'"
    )


@router.post("/datasets", status_code=201, summary="Export feedback as a dataset snapshot")
def post_dataset(request: Request, principal: HeavyAdminKey, body: NewDataset) -> dict[str, Any]:
    assert principal.project is not None
    filters = ExportFilters(principal.project, **body.model_dump(exclude={"format"}))
    try:
        snapshot, _, _ = record_snapshot(runtime(request).store, body.format, filters)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return _out(snapshot)


@router.get("/datasets", summary="Dataset snapshots, newest first")
def get_datasets(
    request: Request, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    store = runtime(request).store
    return {"items": [_out(s) for s in list_snapshots(store, principal.project or "", limit)]}


@router.get("/datasets/{snapshot_id}", summary="One dataset snapshot")
def get_dataset(request: Request, principal: ReadKey, snapshot_id: str) -> dict[str, Any]:
    try:
        return _out(get_snapshot(runtime(request).store, snapshot_id, principal.project or ""))
    except SnapshotError as exc:
        raise ApiError(404, str(exc)) from None


@router.get("/datasets/{snapshot_id}/scores", summary="People's scores of held-out calls")
def get_dataset_scores(
    request: Request, principal: HeavyReadKey, snapshot_id: str
) -> dict[str, Any]:
    """What an LLM judge must agree with before the eval gate trusts it."""
    ledger = StoreLedger(runtime(request).store, principal.project or "")
    try:
        items = ledger.held_out_scores(snapshot_id)
    except SnapshotError as exc:
        raise ApiError(404, str(exc)) from None
    return {"items": [asdict(item) for item in items]}


@router.get("/datasets/{snapshot_id}/{split}", summary="A snapshot's train or test file")
def get_dataset_file(
    request: Request, principal: HeavyReadKey, snapshot_id: str, split: Literal["train", "test"]
) -> Response:
    store = runtime(request).store
    try:
        snapshot = get_snapshot(store, snapshot_id, principal.project or "")
        _, train, test = load_snapshot(store, snapshot_id, principal.project or "")
    except SnapshotError as exc:
        status = 404 if "no dataset snapshot" in str(exc) else 409
        raise ApiError(status, str(exc)) from None
    media = "application/json" if snapshot.format == "label-studio" else "application/x-ndjson"
    body = encode_rows(snapshot.format, train if split == "train" else test)
    return Response(body, media_type=media, headers={"x-driftline-sha256": snapshot.sha256})


def _out(snapshot: Snapshot) -> dict[str, Any]:
    out = asdict(snapshot)
    out["created_at"] = snapshot.created_at.isoformat().replace("+00:00", "Z")
    return out
