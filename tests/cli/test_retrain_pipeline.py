"""The whole loop's last step as a new user sets it up: `driftline serve` with a `retrain:` rule
whose local command is examples/retrain.sh; reviewed corrections start a job that exports a
snapshot, fine-tunes the model in service, gates and promotes it, and the promotion arrives as
a signed notification."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from driftline.cli.commands import main
from driftline.store import migrate, open_store
from tests.alerts.conftest import SECRET
from tests.alerts.receiver import Receiver
from tests.conftest import start_server, stop_server, wait_for
from tests.finetune import world

REPO = Path(__file__).resolve().parents[2]
RULES = """
rules:
  - alert: RetrainOnFeedback
    when: {{feedback: {{at_least: 20}}}}
    labels: {{severity: info}}
    retrain: {{cooldown: 1h}}
  - alert: ModelPromoted
    when: {{model: {{status: promoted, over: 1h}}}}
    labels: {{severity: info}}
    annotations: {{summary: "{{{{ $labels.version }}}} is in service"}}
retraining:
  command: ["sh", "{script}", "{{job_file}}"]
  timeout: 10m
route: {{receiver: hook, group_by: [alertname, version], group_wait: 0s, group_interval: 1s}}
receivers:
  - name: hook
    webhook: {{url: "{hook}", secret: "${{HOOK_SECRET}}"}}
"""


def test_a_retrain_rule_runs_the_pipeline_and_announces_the_promotion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    migrate(store)
    world.insert_world(store, "default")
    store.close()
    base = world.base_model(tmp_path / "models" / "current")
    cli = CliRunner()
    registered = cli.invoke(main, ["models", "register", str(base), "--data", str(data)])
    assert registered.exit_code == 0, registered.output
    made = cli.invoke(main, ["keys", "create", "--project", "default", "--role", "admin",
                             "--data", str(data)])  # fmt: skip
    admin = made.stdout.split()[-1]

    with Receiver(secret=SECRET) as receiver:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(script=REPO / "examples" / "retrain.sh",
                                      hook=receiver.url + "/hook"))  # fmt: skip
        server = start_server(data, env={
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
            "DRIFTLINE_ALERTS__RULES_FILE": str(rules),
            "DRIFTLINE_ALERTS__EVALUATION_INTERVAL": "1",
            "DRIFTLINE_ALERTS__OUTBOX__TICK_SECONDS": "0.2",
            "HOOK_SECRET": SECRET,
            "DRIFTLINE_API_KEY": admin,
            "DRIFTLINE_MODELS": str(tmp_path / "models"),
            "DRIFTLINE_FINETUNE__MODELS_ROOT": str(tmp_path / "models"),
            "DRIFTLINE_FINETUNE__TRAIN__LEARNING_RATE": "5e-3",
            "DRIFTLINE_FINETUNE__TRAIN__EPOCHS": "3",
            "DRIFTLINE_FINETUNE__TRAIN__BATCH_SIZE": "8",
            "DRIFTLINE_FINETUNE__TRAIN__MAX_LENGTH": "64",
            "DRIFTLINE_FINETUNE__RUNS_DIR": str(tmp_path / "runs"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        })  # fmt: skip
        try:
            [job] = wait_for(
                lambda: [j for j in api(server.url, admin, "/api/retrain-jobs")
                         if j["status"] in ("succeeded", "failed")],
                "the retraining job did not finish",
                timeout=240,  # before pytest's own 300 s, so the message says what hung
            )  # fmt: skip
            assert job["status"] == "succeeded", job["output"]
            assert "promoted v2" in job["output"]
            current = httpx.get(server.url + "/api/models/current", headers=auth(admin)).json()
            assert current["version"] == "v2" and current["method"] == "dpo"
            assert current["path"] == str((tmp_path / "models" / job["id"]).resolve())
            [run] = api(server.url, admin, "/api/finetune-runs")
            assert run["status"] == "succeeded" and run["snapshot_id"] == current["snapshot_id"]

            def promoted() -> list[Any]:
                return [r for r in receiver.delivered if "v2" in versions(r.json())]

            [note] = wait_for(promoted, "no notification of the promotion")
            assert note.verified is True
            assert note.json()["alerts"][0]["annotations"]["summary"] == "v2 is in service"

            detail = httpx.get(f"{server.url}/api/finetune-runs/{run['id']}", headers=auth(admin))
            curves = detail.json()["curves"]
            assert len(curves["loss"]) == run["step"] and curves["reward_margin"][-1][1] > 0
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'driftline_model_current_info{project="default",version="v2"} 1.0' in metrics
            assert (
                'driftline_finetune_runs{method="dpo",project="default",status="succeeded"} 1.0'
                in metrics
            )
            rolled_back_by_hand(server.url, admin, run["id"])
            # A job of project beta that was handed this project's key stops at its first call.
            beta = CliRunner(env={"DRIFTLINE_PROJECT": "beta"}).invoke(
                main, ["models", "current", "--url", server.url, "--key", admin]
            )
            assert beta.exit_code == 1
            assert "403: this key belongs to project 'default', not 'beta'" in beta.output
        finally:
            stop_server(server)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api(url: str, key: str, path: str) -> list[Any]:
    response = httpx.get(url + path, headers=auth(key), timeout=30)
    response.raise_for_status()
    return list(response.json()["items"])


def versions(body: dict[str, Any]) -> set[str]:
    return {a["labels"].get("version", "") for a in body["alerts"]}


def rolled_back_by_hand(url: str, key: str, run_id: str) -> None:
    """The registry commands against the running server, as an operator uses them."""
    api_flags = ["--url", url, "--key", key]

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, *api_flags], catch_exceptions=False)

    listed = cli("models", "list").stdout.splitlines()
    assert listed[0].startswith("  v1\tpromoted\t-\tnot gated")
    assert listed[1].startswith("* v2\tpromoted\tdpo\twin rate 100.0%")
    assert run_id in cli("finetune", "runs").stdout
    rolled = cli("models", "rollback")
    assert rolled.exit_code == 0 and "v2 rolled back; v1 is current" in rolled.stdout
    assert cli("models", "current").stdout.startswith("v1\t")
    again = cli("models", "rollback")
    assert again.exit_code == 1 and "nothing to roll back to" in again.output
    back = cli("models", "promote", "v2")
    assert back.exit_code == 0 and "v2 is current" in back.stdout
