"""Dataset snapshots over the API and from the shell: created from feedback, listed, their
files rebuilt and checked, scoped to the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from driftline.store import Store, keys, migrate, open_store
from tests.api.test_feedback_api import post
from tests.conftest import Collector
from tests.review.test_feedback_shapes import ANSWER_A, ANSWER_B, TRACE, B, store_calls


def api(c: Collector, method: str, path: str, key: str, **kwargs: Any) -> Any:
    return c.client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def test_snapshot_files_and_scoping(collector: Collector) -> None:
    store_calls(collector.runtime.store)
    fix = {"trace_id": TRACE, "span_id": B, "name": "correction", "correction": ANSWER_A}
    reviewer = keys.create_key(collector.runtime.store, "alpha", "review", "ann")[1]
    assert post(collector, fix, reviewer).status_code == 200
    made = api(collector, "POST", "/api/datasets", collector.admin_key,
               json={"format": "dpo", "conversational": False, "test_fraction": 0})  # fmt: skip
    assert made.status_code == 201, made.text
    snapshot = made.json()
    assert snapshot["rows"] == 1 and snapshot["counts"]["rows"] == {"train": 1, "test": 0}
    assert snapshot["filters"]["test_fraction"] == 0 and snapshot["filters"]["until"]

    train = api(collector, "GET", f"/api/datasets/{snapshot['id']}/train", collector.read_key)
    assert train.headers["content-type"] == "application/x-ndjson"
    question = "What is the capital of France?"
    assert [json.loads(line) for line in train.text.splitlines()] == [
        {"prompt": question, "chosen": ANSWER_A, "rejected": ANSWER_B}
    ]
    assert (
        api(collector, "GET", f"/api/datasets/{snapshot['id']}/test", collector.read_key).text == ""
    )
    listed = api(collector, "GET", "/api/datasets", collector.read_key).json()["items"]
    assert [s["id"] for s in listed] == [snapshot["id"]]

    beta = keys.create_key(collector.runtime.store, "beta", "admin")[1]
    assert api(collector, "GET", f"/api/datasets/{snapshot['id']}", beta).status_code == 404
    assert api(collector, "GET", "/api/datasets", beta).json()["items"] == []
    bad = api(collector, "POST", "/api/datasets", collector.admin_key, json={"format": "csv"})
    assert bad.status_code == 400 and "dpo" in bad.json()["error"]
    refused = api(collector, "POST", "/api/datasets", collector.read_key, json={"format": "dpo"})
    assert refused.status_code == 403


def test_export_from_the_shell_on_a_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store: Store = open_store(data)
    migrate(store)
    store_calls(store, project="default")
    store.command(
        "INSERT INTO feedback (project_id, id, trace_id, span_id, name, kind, value_string, "
        "source, created_at) VALUES ('default', 'f1', {t:String}, {s:String}, 'correction', "
        "'correction', {c:String}, 'review', now64(3))",
        {"t": TRACE, "s": B, "c": ANSWER_A},
    )
    store.close()
    out = tmp_path / "out" / "kto.jsonl"
    ran = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "export", "--format", "kto", "--plain",
         "--test-fraction", "0", "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert len(ran.stdout.strip()) == 32  # the snapshot id
    assert f"{out}: 2 rows" in ran.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["completion"], r["label"]) for r in rows} == {(ANSWER_A, True), (ANSWER_B, False)}
    assert (tmp_path / "out" / "kto.test.jsonl").read_text() == ""
