"""The `driftline` command line, with and without a server holding the data folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from driftline.api.config import ConfigError, load_settings
from driftline.cli.commands import main
from tests.conftest import ServerProcess
from tests.factory import PROTOBUF, auth, genai_attrs, request, span

KEY = re.compile(r"^dl_[0-9a-f]{12}_[0-9a-f]{40}$")


def driftline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_keys_without_a_server(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--project", "shop", "--role", "read",
                                   "--data", data])  # fmt: skip
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert KEY.match(key), "stdout must hold only the new key"
    key_id = key.split("_")[1]

    listed = runner.invoke(main, ["keys", "list", "--data", data, "--project", "shop"])
    assert key_id in listed.stdout and "read" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout, "keys are never shown again"

    revoked = runner.invoke(main, ["keys", "revoke", key_id, "--data", data])
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(main, ["keys", "list", "--data", data])
    assert "revoked" in listed.stdout

    unknown = runner.invoke(main, ["keys", "revoke", "000000000000", "--data", data])
    assert unknown.exit_code == 1 and "no key with id" in unknown.output


def test_bad_input_is_named(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    runner = CliRunner()
    bad_project = runner.invoke(main, ["keys", "create", "--project", "Bad Name!", "--role",
                                       "read", "--data", data])  # fmt: skip
    assert bad_project.exit_code == 2 and "project name" in bad_project.output
    bad_role = runner.invoke(main, ["keys", "create", "--project", "a", "--role", "root"])
    assert bad_role.exit_code == 2 and "--role" in bad_role.output
    config = tmp_path / "bad.toml"
    config.write_text("port = 'eighty'\nbogus = 1\n")
    result = runner.invoke(main, ["keys", "list", "--config", str(config), "--data", data])
    assert result.exit_code == 2
    assert "port" in result.output and "bogus" in result.output
    embedded_store_ack = runner.invoke(main, ["serve", "--ack", "store", "--data", data])
    assert embedded_store_ack.exit_code == 2
    assert "ack" in embedded_store_ack.output and "clickhouse_url" in embedded_store_ack.output
    quorum = tmp_path / "quorum.toml"
    quorum.write_text("clickhouse_url = 'http://ch:8123/d'\ninsert_quorum = -2\n")
    bad_quorum = runner.invoke(main, ["serve", "--config", str(quorum), "--data", data])
    assert bad_quorum.exit_code == 2 and "insert_quorum" in bad_quorum.output


def test_settings_precedence_flags_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text('port = 5000\nhost = "0.0.0.0"\n[retention_days]\nspans = 7\n')
    monkeypatch.setenv("DRIFTLINE_PORT", "6000")
    settings = load_settings(config)
    assert (settings.port, settings.host) == (6000, "0.0.0.0")
    assert settings.retention_days == {
        "llm_calls": 90,
        "spans": 7,
        "feedback": 0,
        "otel_metrics": 30,
        "otel_logs": 30,
    }
    assert load_settings(config, port=7000).port == 7000
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(config))
    assert load_settings().host == "0.0.0.0"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(None, retention_days={"calls": 3})


def test_keys_go_through_the_running_server(server: ServerProcess) -> None:
    data = str(server.data)
    created = driftline("keys", "create", "--project", "shop", "--role", "ingest", "--data", data)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY.match(key)

    body = request([span(genai_attrs())]).SerializeToString()
    posted = httpx.post(f"{server.url}/v1/traces", content=body, headers={**PROTOBUF, **auth(key)})
    assert posted.status_code == 200

    listed = driftline("keys", "list", "--data", data, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"project_id": "shop"' in listed.stdout

    revoked = driftline("keys", "revoke", key.split("_")[1], "--data", data)
    assert revoked.returncode == 0, revoked.stderr
    second = driftline("serve", "--data", data, "--port", "1")
    assert second.returncode == 1 and "in use by another driftline process" in second.stderr


def test_sdk_only_install_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install driftline` has no click: the command says which extra to install."""
    import builtins

    from driftline import cli

    real_import = builtins.__import__

    def no_click(name: str, *args: object, **kwargs: object) -> object:
        if name == "driftline.cli.commands":
            raise ModuleNotFoundError("No module named 'click'", name="click")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_click)
    with pytest.raises(SystemExit, match=r"pip install 'driftline\[server\]'"):
        cli.main()


def test_the_data_folder_is_the_service_users_alone(server: ServerProcess) -> None:
    """What users sent (prompts, answers, keys' hashes, the log) is created 0700/0600."""
    sent = httpx.post(
        server.url + "/v1/traces", content=request([span(genai_attrs())]).SerializeToString(),
        headers={**auth(server.ingest_key), **PROTOBUF}, timeout=30,
    )  # fmt: skip
    assert sent.status_code == 200
    data = server.data
    for folder in (data, data / "wal", data / "clickhouse", data / "spool"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    logged = [p for p in (data / "wal").iterdir() if p.is_file()]
    assert logged and all(p.stat().st_mode & 0o777 == 0o600 for p in logged), logged
    assert (data / "control.json").stat().st_mode & 0o777 == 0o600


def test_config_errors_never_echo_a_credential(tmp_path: Path) -> None:
    config = tmp_path / "secret.toml"
    config.write_text(
        'clickhouse_url = ["http://driftline:pw-999@clickhouse:8123"]\n'
        "[finetune.gate.judge]\n"
        'url = "http://judge.local/v1"\n'
        'api_key = "sk-live-123"\n'  # and no `model`: the error's input is this whole table
    )
    result = CliRunner().invoke(main, ["keys", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert "clickhouse_url" in result.output and "finetune.gate.judge.model" in result.output
    assert "pw-999" not in result.output and "sk-live-123" not in result.output
    good = tmp_path / "good.toml"
    good.write_text(
        '[finetune.gate.judge]\nurl = "http://judge.local/v1"\nmodel = "grader"\n'
        'api_key = "sk-live-123"\n'
    )
    settings = load_settings(good)
    judge = settings.finetune.gate.judge
    assert judge is not None and judge.api_key.get_secret_value() == "sk-live-123"
    assert "sk-live-123" not in repr(judge) + str(settings.model_dump())
