"""What a fine-tune leaves behind: its run (status, hyperparameters, curves) and the model
versions the gate judged. `Ledger` is where they go; `StoreLedger` writes them to the store, and
the CLI's API client speaks the same protocol when a running collector owns the store."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from driftline.evaluators.agreement import Bar, JudgeTrust, judge_trust
from driftline.evaluators.config import EvaluatorSettings
from driftline.finetune import tables
from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.rows import Row
from driftline.finetune.dataset.snapshots import Snapshot, get_snapshot, load_snapshot
from driftline.finetune.dataset.split import held_out_scores
from driftline.store import Store
from driftline.store.arrow import table_of

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
VERSION_STATUSES = ("candidate", "promoted", "rejected", "rolled_back")


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

    def judge_trust(self, name: str, config: EvaluatorSettings) -> JudgeTrust:
        """How far people's audits agree with the online judge `name` (`config`)."""
        ...


# --- runs ------------------------------------------------------------------------------------


def run_table(run: Run) -> pa.Table:
    """A run's current state as a one-row table of `tables.FINETUNE_RUNS`."""
    return table_of(
        tables.FINETUNE_RUNS,
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
            "step": [run.step],
            "total_steps": [run.total_steps],
            "summary": [json.dumps(run.summary, sort_keys=True)],
            "created_at": [round(run.created_at * 1000)],
            "updated_at": [round(run.updated_at * 1000)],
        },
    )


def metrics_table(project: str, run_id: str, step: int, figures: dict[str, float]) -> pa.Table:
    """One step's figures as rows of `tables.FINETUNE_METRICS`."""
    names = sorted(figures)
    now = round(time.time() * 1000)
    return table_of(
        tables.FINETUNE_METRICS,
        {
            "project_id": [project] * len(names),
            "run_id": [run_id] * len(names),
            "step": [step] * len(names),
            "name": names,
            "value": [float(figures[n]) for n in names],
            "at": [now] * len(names),
        },
    )


def read_runs(store: Store, project: str, run_id: str | None = None, limit: int = 100) -> list[Run]:
    """The project's runs (or one), newest first."""
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
        for r in tables.run_rows(store, project, run_id, limit)
    ]


# --- versions --------------------------------------------------------------------------------


def version_table(v: ModelVersion) -> pa.Table:
    """A version's current state as a one-row table of `tables.MODEL_VERSIONS`."""
    return table_of(
        tables.MODEL_VERSIONS,
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
            "created_at": [round(v.created_at * 1000)],
            "updated_at": [round(v.updated_at * 1000)],
        },
    )


def read_versions(store: Store, project: str | None) -> list[ModelVersion]:
    """The project's versions (every project's with None), oldest first."""
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
        for r in tables.version_rows(store, project)
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
        tables.insert_runs(self.store, run_table(run))

    def save_metrics(self, run_id: str, step: int, figures: dict[str, float]) -> None:
        if figures:
            tables.insert_metrics(self.store, metrics_table(self.project, run_id, step, figures))

    def runs(self, run_id: str | None = None) -> list[Run]:
        return read_runs(self.store, self.project, run_id)

    def versions(self) -> list[ModelVersion]:
        return read_versions(self.store, self.project)

    def save_version(self, version: ModelVersion) -> None:
        version.updated_at = max(time.time(), version.updated_at + 0.001)
        tables.insert_versions(self.store, version_table(version))

    def judge_trust(self, name: str, config: EvaluatorSettings) -> JudgeTrust:
        user = f"{name}@{config.version}"
        return judge_trust(self.store, self.project, user, Bar.of(config), time.time_ns())
