"""The fine-tune ledger through a running collector's API: when `driftline serve` owns the
embedded store, a fine-tune reads its snapshot and records its run and versions over HTTP."""

from __future__ import annotations

import json
from datetime import datetime

import click

from driftline.cli.client import Client, NotFound
from driftline.evaluators.agreement import Bar, CriterionTrust, JudgeTrust
from driftline.evaluators.config import EvaluatorSettings
from driftline.finetune.dataset.rows import Row
from driftline.finetune.dataset.snapshots import Snapshot
from driftline.finetune.ledger import ModelVersion, Run, ScoredItem


class ApiLedger:
    """`Ledger` over HTTP with an admin key of the project."""

    def __init__(self, url: str | None, key: str, project: str) -> None:
        self.api, self.project = Client.local(url, key), project

    def snapshot(self, snapshot_id: str) -> tuple[Snapshot, list[Row], list[Row]]:
        meta = self.api.json("GET", f"/api/datasets/{snapshot_id}")
        files = [
            self.api.bytes("GET", f"/api/datasets/{snapshot_id}/{split}")
            for split in ("train", "test")
        ]
        meta["created_at"] = datetime.fromisoformat(meta["created_at"].replace("Z", "+00:00"))
        train, test = ([json.loads(line) for line in f.splitlines() if line] for f in files)
        return Snapshot(**meta), train, test

    def held_out_scores(self, snapshot_id: str) -> list[ScoredItem]:
        items = self.api.json("GET", f"/api/datasets/{snapshot_id}/scores")["items"]
        return [ScoredItem(**item) for item in items]

    def save_run(self, run: Run) -> None:
        body = {k: v for k, v in run.to_json().items() if k not in ("id", "project")}
        self.api.json("PUT", f"/api/finetune-runs/{run.id}", json=body)

    def save_metrics(self, run_id: str, step: int, figures: dict[str, float]) -> None:
        if figures:
            body = {"step": step, "figures": figures}
            self.api.json("POST", f"/api/finetune-runs/{run_id}/metrics", json=body)

    def runs(self, run_id: str | None = None) -> list[Run]:
        if run_id:
            try:
                return [Run.from_json(self.api.json("GET", f"/api/finetune-runs/{run_id}"))]
            except NotFound:
                return []
        return [Run.from_json(r) for r in self.api.json("GET", "/api/finetune-runs")["items"]]

    def versions(self) -> list[ModelVersion]:
        return [ModelVersion.from_json(v) for v in self.api.json("GET", "/api/models")["items"]]

    def save_version(self, version: ModelVersion) -> None:
        body = {k: v for k, v in version.to_json().items() if k not in ("version", "project")}
        self.api.json("PUT", f"/api/models/{version.version}", json=body)

    def judge_trust(self, name: str, config: EvaluatorSettings) -> JudgeTrust:
        """As the collector sees it, by its own `[evaluators.NAME]`."""
        found = self.api.json("GET", f"/api/evaluators/{name}/agreement")
        if found["version"] != config.version:
            raise click.ClickException(
                f"the collector audits evaluator {name!r} at version {found['version']}, this "
                f"config names version {config.version}: the gate would ask one judge and "
                "trust another's audit; use the collector's configuration"
            )
        bar = Bar(found["min_spearman"], found["min_audited"], found["days"])
        return JudgeTrust([CriterionTrust(**c) for c in found["criteria"]], bar)
