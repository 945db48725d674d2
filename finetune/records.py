"""What a fine-tune leaves behind: its run (status, hyperparameters, curves) and the model
versions the gate judged. `Ledger` is where they go; `StoreLedger` writes them to the store, and
the CLI's API client speaks the same protocol when a running collector owns the store."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from driftline.finetune.datasets import (
    ExportFilters,
    Row,
    Snapshot,
    get_snapshot,
    held_out_scores,
    load_snapshot,
)
from driftline.store import Store

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
VERSION_STATUSES = ("candidate", "promoted", "rejected", "rolled_back")

_TS = pa.timestamp("ms", "UTC")


@dataclass
class Run:
    """One fine-tune: what it read, how it was set, how far it got."""

    id: str
    project: str
    snapshot_id: str
    method: str
    base_model: str
    output: str
    params: dict[str, Any]
    status: str = "running"
    error: str = ""
    step: int = 0
    total_steps: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class ModelVersion:
    """A model folder the registry knows, and what the gate said about it."""

    project: str
    version: str
    path: str
    status: str
    base_version: str = ""
    run_id: str = ""
    snapshot_id: str = ""
    method: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelVersion:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ScoredItem:
    """A held-out call with the people's mean score per rubric criterion."""

    prompt: str
    response: str
    scores: dict[str, float]


class VersionError(ValueError):
    """A model version is unknown, or cannot move to the state asked for."""


class Ledger(Protocol):
    """Where a fine-tune reads its snapshot and records its run and versions."""

    project: str

    def snapshot(self, snapshot_id: str) -> tuple[Snapshot, list[Row], list[Row]]: ...

    def held_out_scores(self, snapshot_id: str) -> list[ScoredItem]: ...

    def save_run(self, run: Run) -> None: ...

    def save_metrics(self, run_id: str, step: int, figures: dict[str, float]) -> None: ...

    def runs(self, run_id: str | None = None) -> list[Run]: ...

    def versions(self) -> list[ModelVersion]: ...

    def save_version(self, version: ModelVersion) -> None: ...


# --- runs ------------------------------------------------------------------------------------


def run_table(run: Run) -> pa.Table:
    """A run's current state as a one-row table for `finetune_runs`."""
    return pa.table(
        {
            "project_id": [run.project],
            "id": [run.id],
            "snapshot_id": [run.snapshot_id],
            "method": [run.method],
            "base_model": [run.base_model],
            "output": [run.output],
            "params": [json.dumps(run.params, sort_keys=True)],
            "status": [run.status],
            "error": [run.error],
            "step": pa.array([run.step], pa.uint32()),
            "total_steps": pa.array([run.total_steps], pa.uint32()),
            "summary": [json.dumps(run.summary, sort_keys=True)],
            "created_at": pa.array([round(run.created_at * 1000)], _TS),
            "updated_at": pa.array([round(run.updated_at * 1000)], _TS),
        }
    )


def metrics_table(project: str, run_id: str, step: int, figures: dict[str, float]) -> pa.Table:
    """One step's figures as rows of `finetune_metrics`."""
    names = sorted(figures)
    now = round(time.time() * 1000)
    return pa.table(
        {
            "project_id": [project] * len(names),
            "run_id": [run_id] * len(names),
            "step": pa.array([step] * len(names), pa.uint32()),
            "name": names,
            "value": pa.array([float(figures[n]) for n in names], pa.float64()),
            "at": pa.array([now] * len(names), _TS),
        }
    )


_RUN_COLUMNS = """id, project_id, snapshot_id, method, base_model, output, params, status, error,
    step, total_steps, summary, toUnixTimestamp64Milli(created_at) AS created_ms,
    toUnixTimestamp64Milli(updated_at) AS updated_ms"""


def read_runs(store: Store, project: str, run_id: str | None = None, limit: int = 100) -> list[Run]:
    """The project's runs (or one), newest first."""
    rows = store.query(
        f"SELECT {_RUN_COLUMNS} FROM finetune_runs FINAL WHERE project_id = {{p:String}} "
        + ("AND id = {id:String} " if run_id else "")
        + "ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "id": run_id or "", "limit": limit},
    )
    return [
        Run(
            id=r["id"],
            project=r["project_id"],
            snapshot_id=r["snapshot_id"],
            method=r["method"],
            base_model=r["base_model"],
            output=r["output"],
            params=json.loads(r["params"] or "{}"),
            status=r["status"],
            error=r["error"],
            step=int(r["step"]),
            total_steps=int(r["total_steps"]),
            summary=json.loads(r["summary"] or "{}"),
            created_at=r["created_ms"] / 1000,
            updated_at=r["updated_ms"] / 1000,
        )
        for r in rows
    ]


def read_curves(store: Store, project: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """A run's figures over steps: name -> [(step, value)]."""
    rows = store.query(
        "SELECT name, step, value FROM finetune_metrics FINAL WHERE project_id = {p:String} "
        "AND run_id = {r:String} ORDER BY name, step",
        {"p": project, "r": run_id},
    )
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        curves.setdefault(r["name"], []).append((int(r["step"]), float(r["value"])))
    return curves


# --- versions --------------------------------------------------------------------------------


def version_table(v: ModelVersion) -> pa.Table:
    """A version's current state as a one-row table for `model_versions`."""
    return pa.table(
        {
            "project_id": [v.project],
            "version": [v.version],
            "path": [v.path],
            "base_version": [v.base_version],
            "run_id": [v.run_id],
            "snapshot_id": [v.snapshot_id],
            "method": [v.method],
            "status": [v.status],
            "verdict": [json.dumps(v.verdict, sort_keys=True)],
            "created_at": pa.array([round(v.created_at * 1000)], _TS),
            "updated_at": pa.array([round(v.updated_at * 1000)], _TS),
        }
    )


def read_versions(store: Store, project: str | None) -> list[ModelVersion]:
    """The project's versions (every project's with None), oldest first."""
    rows = store.query(
        "SELECT project_id, version, path, base_version, run_id, snapshot_id, method, status, "
        "verdict, toUnixTimestamp64Milli(created_at) AS created_ms, "
        "toUnixTimestamp64Milli(updated_at) AS updated_ms FROM model_versions FINAL "
        + ("WHERE project_id = {p:String} " if project is not None else "")
        + "ORDER BY project_id, created_at, version",
        {"p": project or ""},
    )
    return [
        ModelVersion(
            project=r["project_id"],
            version=r["version"],
            path=r["path"],
            status=r["status"],
            base_version=r["base_version"],
            run_id=r["run_id"],
            snapshot_id=r["snapshot_id"],
            method=r["method"],
            verdict=json.loads(r["verdict"] or "{}"),
            created_at=r["created_ms"] / 1000,
            updated_at=r["updated_ms"] / 1000,
        )
        for r in rows
    ]


class StoreLedger:
    """The ledger on a store this process owns."""

    def __init__(self, store: Store, project: str) -> None:
        self.store = store
        self.project = project

    def snapshot(self, snapshot_id: str) -> tuple[Snapshot, list[Row], list[Row]]:
        return load_snapshot(self.store, snapshot_id, self.project)

    def held_out_scores(self, snapshot_id: str) -> list[ScoredItem]:
        snapshot = get_snapshot(self.store, snapshot_id, self.project)  # its filters; no rebuild
        filters = ExportFilters.from_json(snapshot.filters)
        return [ScoredItem(*item) for item in held_out_scores(self.store, filters)]

    def save_run(self, run: Run) -> None:
        run.updated_at = max(time.time(), run.updated_at + 0.001)
        self.store.insert_arrow("finetune_runs", run_table(run))

    def save_metrics(self, run_id: str, step: int, figures: dict[str, float]) -> None:
        if figures:
            self.store.insert_arrow(
                "finetune_metrics", metrics_table(self.project, run_id, step, figures)
            )

    def runs(self, run_id: str | None = None) -> list[Run]:
        return read_runs(self.store, self.project, run_id)

    def versions(self) -> list[ModelVersion]:
        return read_versions(self.store, self.project)

    def save_version(self, version: ModelVersion) -> None:
        version.updated_at = max(time.time(), version.updated_at + 0.001)
        self.store.insert_arrow("model_versions", version_table(version))
