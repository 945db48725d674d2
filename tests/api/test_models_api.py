"""PUT /api/models/{version}: a model version's folder must lie inside `finetune.models_root`,
links followed, so an admin key cannot point the registry (and the retraining pipeline that
loads `models current`) at any folder on the server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Collector


def put(collector: Collector, version: str, path: str) -> httpx.Response:
    body: dict[str, Any] = {"path": path, "status": "candidate", "created_at": time.time(),
                            "updated_at": time.time()}  # fmt: skip
    return collector.client.put(
        f"/api/models/{version}", json=body,
        headers={"Authorization": f"Bearer {collector.admin_key}"},
    )  # fmt: skip


def test_model_folders_are_confined_to_the_models_root(
    collector_factory: Any, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    (root / "v1").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "sneaky").symlink_to(tmp_path / "secrets")
    collector = collector_factory(finetune={"models_root": str(root)})

    assert put(collector, "v1", str(root / "v1")).status_code == 200
    for outside in ("/etc", str(root / ".." / "secrets"), str(root / "sneaky"), "~"):
        refused = put(collector, "v2", outside)
        assert refused.status_code == 400, outside
        assert f"outside the models root {root}" in refused.json()["error"]
    listed = collector.client.get(
        "/api/models", headers={"Authorization": f"Bearer {collector.admin_key}"}
    ).json()["items"]
    assert [(v["version"], v["path"]) for v in listed] == [("v1", str(root / "v1"))]
