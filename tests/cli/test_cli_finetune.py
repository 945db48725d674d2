"""`driftline finetune` and `driftline models` name what is wrong with their input (the loop
through a running server is in test_retrain_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from driftline.cli.commands import main
from driftline.store import migrate, open_store
from tests.finetune import world


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


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


@pytest.mark.parametrize(
    "command",
    [
        ["finetune"],
        ["finetune", "gate"],
        ["finetune", "runs"],
        ["models", "list"],
        ["models", "current"],
        ["models", "register"],
        ["models", "promote"],
        ["models", "rollback"],
    ],
)
def test_finetune_and_model_commands_have_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "--key" in result.output and "--project" in result.output
