"""`driftline demo --fast` end to end, as a person runs it: every stage happens, in order, and
leaves its real traces in the store the demo kept."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from driftline.cli.commands import main
from driftline.detectors.tables import drift_windows, queue_items
from driftline.finetune import registry
from driftline.finetune.dataset.snapshots import list_snapshots
from driftline.finetune.ledger import StoreLedger
from driftline.review.tables import sent_feedback
from driftline.store import open_store
from driftline.store.env import DEFAULT_PROJECT
from tests.conftest import free_port

STAGES = ["service", "warmup", "reference", "normal", "drift", "findings", "queue", "alert",
          "review", "export", "finetune", "gate", "promote", "summary"]  # fmt: skip
DEADLINE = 270  # seconds: the demo's own message comes before pytest's 300 s timeout


def run_demo(folder: Path) -> tuple[int, list[dict[str, Any]]]:
    """The demo's exit status and its JSON lines; on the deadline it is interrupted (it
    stops what it started) and the test fails saying how far it got."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "demo", "--fast", "--json", "--no-wait",
         "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = demo.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGINT)
        try:
            out, err = demo.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            out, err = demo.communicate()
        last = out.strip().splitlines()[-3:]
        pytest.fail(f"`driftline demo --fast` took over {DEADLINE} s; it got to: {last}")
    events = [json.loads(line) for line in out.splitlines()]
    assert demo.returncode == 0, (events[-3:], err[-2000:])
    return demo.returncode, events


def test_the_demo_closes_the_loop(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    _, events = run_demo(folder)
    started = [e["stage"] for e in events if e["event"] == "start"]
    done = {e["stage"]: e.get("data", {}) for e in events if e["event"] == "done"}
    assert started == STAGES and list(done) == STAGES

    assert done["warmup"]["stored"] == 150 and done["reference"]["calls"] == 150
    assert done["drift"]["drifting_windows"] == 2
    windows = [e["data"] for e in events if e["event"] == "note" and "window" in e.get("data", {})]
    assert [w["window"] for w in windows] == [1, 2, 3]
    assert all(w["p_values"]["mmd"] < 0.05 for w in windows[1:])
    assert done["queue"]["off_topic_queued"] >= done["drift"]["off_topic_answers"] // 2
    assert done["alert"]["verified"] is True
    assert done["review"]["corrections"] >= 10
    assert done["export"]["train_rows"] >= 8 and done["export"]["test_rows"] >= 2
    assert done["finetune"]["status"] == "succeeded" and done["finetune"]["version"] == "v2"
    assert done["gate"]["promote"] is True
    assert done["promote"] == {"version": "v2", "method": "dpo", "announced": True}

    # What it left behind: the store, the model folders, the exported rows.
    store = open_store(folder / "data")
    try:
        assert store.query("SELECT count() AS n FROM llm_calls")[0]["n"] == 450
        tested = drift_windows(store, DEFAULT_PROJECT, "helper-baseline", None, None, 10)
        assert [w["drifting"] for w in tested][1:] == [True, True]
        queued = queue_items(store, DEFAULT_PROJECT, None, None, "helper-baseline", None, 1000)
        assert len(queued) == done["queue"]["queued"]
        corrections = sent_feedback(store, DEFAULT_PROJECT, None, "correction", "review",
                                    None, None, 1000)  # fmt: skip
        assert len(corrections) == done["review"]["corrections"]
        [snapshot] = list_snapshots(store, DEFAULT_PROJECT)
        assert snapshot.id == done["export"]["snapshot"]
        ledger = StoreLedger(store, DEFAULT_PROJECT)
        [run] = ledger.runs()
        assert run.status == "succeeded" and run.snapshot_id == snapshot.id
        current = registry.current(ledger)
        assert current is not None and current.version == "v2"
        assert current.verdict["promote"] is True
        delivered = store.query(
            "SELECT body FROM notifications FINAL WHERE status = 'delivered'"
        )  # fmt: skip
        names = {alert["labels"]["alertname"]
                 for row in delivered for alert in json.loads(row["body"])["alerts"]}  # fmt: skip
        assert {"AnswersDrift", "ModelPromoted"} <= names
    finally:
        store.close()
    assert (folder / "models" / "candidate" / "config.json").is_file()
    rows = (folder / "models" / "exports" / "feedback.jsonl").read_text().splitlines()
    assert len(rows) == done["export"]["train_rows"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fats"], "No such option '--fats'"),
        (["--port", "{busy}"], "is in use; choose another with --port"),
        (["--dir", "{full}"], "is not empty; the demo adds calls"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(
    tmp_path: Path, args: list[str], says: str
) -> None:
    full = tmp_path / "mine"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        port = str(busy.getsockname()[1])
        filled = [a.format(busy=port, full=full) for a in args]
        result = CliRunner().invoke(main, ["demo", "--json", *filled])
    assert result.exit_code == 2
    assert says in result.output
    assert (full / "notes.txt").read_text() == "keep me"
