"""The alert commands from the shell: `silence` against a running server, `alerts --once` on a
data folder, `rules check` (see tests/alerts/test_rules.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from driftline.cli.commands import main
from tests.alerts.conftest import failing_calls_folder
from tests.alerts.receiver import Receiver
from tests.cli.test_commands import driftline
from tests.conftest import ServerProcess


@pytest.mark.parametrize(
    "command",
    [
        ["rules", "check"],
        ["silence", "add"],
        ["silence", "list"],
        ["silence", "expire"],
        ["alerts"],
    ],
)
def test_alert_commands_have_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_silence_add_list_expire(server: ServerProcess) -> None:
    made = driftline("keys", "create", "--project", "default", "--role", "admin",
                     "--data", str(server.data))  # fmt: skip
    admin = made.stdout.split()[-1]
    api = ("--url", server.url, "--key", admin)
    added = driftline(
        "silence", "add", 'alertname="EmbeddingDrift"', "service=~bot.*", "--duration", "2h",
        "--comment", "rollout", "--author", "ops", *api,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = driftline("silence", "list", *api).stdout
    assert silence_id in listed and 'alertname="EmbeddingDrift" service=~"bot.*"' in listed
    assert "active" in listed and "ops: rollout" in listed
    expired = driftline("silence", "expire", silence_id, *api)
    assert expired.returncode == 0 and f"expired {silence_id}" in expired.stderr
    assert driftline("silence", "list", *api).stdout == ""
    assert silence_id in driftline("silence", "list", "--all", *api).stdout

    bad = driftline("silence", "add", "service", "--comment", "x", *api)
    assert bad.returncode == 1 and 'must look like name="value"' in bad.stderr
    read_only = driftline("silence", "add", "a=b", "--comment", "x", "--url", server.url,
                          "--key", server.read_key)  # fmt: skip
    assert read_only.returncode == 1 and "403" in read_only.stderr


def test_alerts_once_evaluates_and_delivers(tmp_path: Path) -> None:
    data = failing_calls_folder(tmp_path / "data")
    with Receiver() as receiver:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "rules:\n  - alert: HighErrorRate\n    when: {metric: {metric: error_rate, above: 0.1,"
            " min_calls: 10}}\nroute: {receiver: hook, group_wait: 0s}\n"
            f"receivers:\n  - name: hook\n    webhook: {{url: '{receiver.url}/hook'}}\n"
        )
        ran = driftline("alerts", "--once", "--data", str(data), "--rules", str(rules))
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("HighErrorRate\tfiring\t")
        assert "1 deliveries attempted" in ran.stderr
        [request] = receiver.delivered
        assert request.json()["alerts"][0]["labels"]["service"] == "a"
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{alert: X}]\n")
    failed = driftline("alerts", "--once", "--data", str(data), "--rules", str(broken))
    assert failed.returncode == 1 and f"{broken}:1: rules.0.when: Field required" in failed.stderr


def test_serve_refuses_a_broken_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - alert: X\n    when: {drift: {consecutive: 0}}\n")
    ran = driftline(
        "serve", "--data", str(tmp_path / "data"), "--port", "1",
        env={**os.environ, "DRIFTLINE_ALERTS__RULES_FILE": str(rules)},
    )  # fmt: skip
    assert ran.returncode == 1
    assert f"alerts.rules_file: {rules}:3: rules.0.when.drift.consecutive" in ran.stderr
