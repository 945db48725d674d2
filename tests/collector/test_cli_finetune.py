"""The fine-tune loop from the shell, as a new user runs it against `driftline serve`: export a
snapshot, register the model in service, train a candidate, gate and promote it, roll back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from driftline.collector.cli import main
from driftline.store import migrate, open_store
from tests.collector.test_cli import driftline
from tests.conftest import start_server, stop_server
from tests.finetune import world

FAST = ["learning_rate=5e-3", "epochs=3", "batch_size=8", "max_length=64"]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_export_finetune_gate_promote_and_rollback_through_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    migrate(store)
    world.insert_world(store, "default")
    store.close()
    base = world.base_model(tmp_path / "models" / "current")
    server = start_server(data)
    try:
        made = driftline("keys", "create", "--project", "default", "--role", "admin",
                         "--data", str(data))  # fmt: skip
        monkeypatch.setenv("DRIFTLINE_API_KEY", made.stdout.split()[-1])
        monkeypatch.setenv("DRIFTLINE_URL", server.url)
        monkeypatch.chdir(tmp_path)  # the runs' checkpoints go under ./driftline-runs

        exported = run("export", "--format", "dpo", "--out", "prefs.jsonl", "--test-fraction",
                       "0.25")  # fmt: skip
        assert exported.exit_code == 0, exported.output
        snapshot = exported.stdout.strip().splitlines()[-1]

        registered = run("models", "register", str(base))
        assert registered.stdout.startswith("v1\tpromoted")

        sets = [arg for item in FAST for arg in ("--set", item)]
        trained = run("finetune", "--snapshot", snapshot, "--model", str(base),
                      "--out", "models/candidate", "--quiet", *sets)  # fmt: skip
        assert trained.exit_code == 0, trained.output
        assert trained.stdout.strip() == "v2"

        gated = run("finetune", "gate", "--candidate", "models/candidate", "--baseline",
                    str(base), "--snapshot", snapshot, "--promote")  # fmt: skip
        assert gated.exit_code == 0, gated.output
        assert "PROMOTED" in gated.stdout and "preference accuracy    1.000" in gated.stdout

        headers = {"Authorization": f"Bearer {server.read_key}"}
        current = httpx.get(f"{server.url}/api/models/current", headers=headers).json()
        assert current["version"] == "v2" and current["verdict"]["promote"] is True
        assert current["path"] == str((tmp_path / "models" / "candidate").resolve())
        [summary] = httpx.get(f"{server.url}/api/finetune-runs", headers=headers).json()["items"]
        assert summary["status"] == "succeeded" and summary["method"] == "dpo"
        detail = httpx.get(f"{server.url}/api/finetune-runs/{summary['id']}", headers=headers)
        curves = detail.json()["curves"]
        assert len(curves["loss"]) == summary["step"] and curves["reward_margin"][-1][1] > 0

        listed = run("models", "list").stdout.splitlines()
        assert listed[0].startswith("  v1\tpromoted") and listed[1].startswith("* v2\tpromoted")
        assert "win rate 100.0%" in listed[1]
        assert summary["id"] in run("finetune", "runs").stdout

        rolled = run("models", "rollback")
        assert rolled.exit_code == 0 and "v2 rolled back; v1 is current" in rolled.stdout
        again = run("models", "rollback")
        assert again.exit_code == 1 and "nothing to roll back to" in again.output

        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'driftline_model_current_info{project="default",version="v1"} 1.0' in metrics
        assert (
            'driftline_finetune_runs{method="dpo",project="default",status="succeeded"} 1.0'
            in metrics
        )
    finally:
        stop_server(server)


def test_bad_finetune_input_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(tmp_path / "driftline-data")
    migrate(store)
    store.close()
    model = world.base_model(tmp_path / "m")
    missing = run("finetune", "--model", str(model))
    assert missing.exit_code == 2 and "missing --snapshot, --out" in missing.output
    bad_set = run("finetune", "--snapshot", "s", "--model", str(model), "--out", "o",
                  "--set", "batch_size=0", "--set", "colour=red")  # fmt: skip
    assert bad_set.exit_code == 2
    assert "train.batch_size: Input should be greater than or equal to 1" in bad_set.output
    assert "train.colour: Extra inputs are not permitted" in bad_set.output
    unknown = run("finetune", "--snapshot", "nope", "--model", str(model), "--out", "o")
    assert unknown.exit_code == 1 and "no dataset snapshot 'nope'" in unknown.output
    listed = run("finetune", "runs")
    assert "\tfailed\t" in listed.stdout and "no dataset snapshot 'nope'" in listed.stdout
    promote = run("models", "promote", "v9")
    assert promote.exit_code == 1 and "no model version 'v9'" in promote.output
