"""`driftline finetune` (train, gate, runs) and `driftline models` (list, register, promote,
rollback): on the store this process owns, or through a running collector with --key."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from driftline.api.config import Settings
from driftline.cli.client import server_options
from driftline.cli.group import (
    DEFAULT_PROJECT,
    main,
    settings_from,
    store_options,
)
from driftline.cli.store import exclusive_store
from driftline.finetune.config import METHODS
from driftline.finetune.ledger import Ledger, ModelVersion, VersionError


def _ledger_options(func: Any) -> Any:
    """--project, and --url/--key to go through a running collector; plus the store options."""
    func = click.option("--project", default=DEFAULT_PROJECT, show_default=True)(func)
    func = server_options("an admin key: record through the running server's API")(func)
    return store_options(func)


@contextmanager
def _ledger(options: dict[str, Any]) -> Iterator[tuple[Ledger, Settings]]:
    """The ledger: the collector's API with a key, else the store this process may own."""
    settings = settings_from(
        options["config_file"], data=options["data"], clickhouse_url=options["clickhouse_url"]
    )
    if options["key"]:
        from driftline.cli.ledger import ApiLedger

        yield ApiLedger(options["url"], options["key"], options["project"]), settings
        return
    from driftline.finetune.ledger import StoreLedger

    with exclusive_store(settings, "records fine-tunes through its API; pass --key, or") as store:
        yield StoreLedger(store, options["project"]), settings


def _ledger_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the ledger's options out of a command's keyword arguments."""
    keys = ("config_file", "data", "clickhouse_url", "url", "key", "project")
    return {k: kwargs.pop(k) for k in keys}


def _finetune_installed() -> None:
    try:
        import driftline.finetune.train  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"fine-tuning needs the [finetune] extra: pip install 'driftline[finetune]' ({exc})"
        ) from None


@main.group(name="finetune", invoke_without_command=True)
@click.option("--snapshot", "snapshot_id", help="dataset snapshot id (driftline export)")
@click.option("--method", type=click.Choice(METHODS), default="dpo", show_default=True)
@click.option("--model", type=click.Path(path_type=Path), help="the model folder to start from")
@click.option("--out", type=click.Path(path_type=Path), help="new folder for the candidate")
@click.option("--reward-model", type=click.Path(path_type=Path),
              help="ppo/grpo: the reward model folder (from --method reward)")  # fmt: skip
@click.option("--resume", "resume", default=None, help="continue an interrupted run by its id")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="a finetune.train setting, e.g. --set learning_rate=1e-5")  # fmt: skip
@click.option("--quiet", is_flag=True, help="no progress bar")
@_ledger_options
@click.pass_context
def finetune_group(ctx: click.Context, **kwargs: Any) -> None:
    """Train a candidate from a dataset snapshot (DPO, KTO, reward model, PPO, GRPO); the
    candidate is registered as a model version for `driftline finetune gate`."""
    if ctx.invoked_subcommand is not None:
        return
    options = _ledger_args(kwargs)
    missing = [f"--{n}" for n in ("snapshot_id", "model", "out") if not kwargs[n]]
    if missing:
        raise click.UsageError(f"missing {', '.join(m.replace('_id', '') for m in missing)}")
    _finetune_installed()
    from driftline.finetune.train import FinetuneError, Request, finetune

    request = Request(
        snapshot_id=kwargs["snapshot_id"],
        method=kwargs["method"],
        model=kwargs["model"],
        out=kwargs["out"],
        reward_model=kwargs["reward_model"],
        resume=kwargs["resume"],
    )
    with _ledger(options) as (ledger, settings):
        config = _with_overrides(settings, kwargs["overrides"])
        try:
            outcome = finetune(
                ledger,
                request,
                config,
                online_reward=_online_reward(settings),
                progress=not kwargs["quiet"],
            )
        except FinetuneError as exc:
            raise click.ClickException(str(exc)) from None
    figures = {k: v for k, v in outcome.run.summary.items() if k in _SHOWN}
    made = outcome.version.version if outcome.version else "reward model"
    click.echo(
        f"run {outcome.run.id}: {made} at {outcome.run.output} "
        f"({outcome.run.step} steps; {_figures(figures)})",
        err=True,
    )
    click.echo(outcome.version.version if outcome.version else outcome.run.output)


_SHOWN = ("loss", "reward_margin", "reward_accuracy", "reward", "kl", "train_runtime")


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) or "no figures"


def _with_overrides(settings: Settings, overrides: tuple[str, ...]) -> Any:
    """The finetune settings with `--set name=value` applied to `train` (validated)."""
    from pydantic import ValidationError

    from driftline.finetune.config import FinetuneSettings

    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--set {item!r}: use NAME=VALUE")
        changes[name.strip()] = value.strip()
    data = settings.finetune.model_dump()
    data["train"].update(changes)
    try:
        return FinetuneSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"--set: {problems}") from None


def _online_reward(settings: Settings) -> Callable[[Path | None], Any]:
    """PPO/GRPO's reward: the reward model plus prompt-response relevance by the detectors'
    embedder (weighted by finetune.train.relevance_weight)."""

    def make(path: Path | None) -> Any:
        from driftline.finetune.rewards import RewardFn, RewardModel, combine, relevance

        if path is None:
            raise click.UsageError("ppo and grpo need --reward-model (train one: --method reward)")
        parts: list[tuple[float, RewardFn]] = [(1.0, RewardModel.load(path).score)]
        weight = settings.finetune.train.relevance_weight
        if weight > 0:
            from driftline.detectors.embedder import Embedder

            parts.append((weight, relevance(Embedder().encode)))
        return combine(parts)

    return make


@finetune_group.command("gate")
@click.option("--candidate", required=True, type=click.Path(path_type=Path))
@click.option("--baseline", required=True, type=click.Path(path_type=Path))
@click.option("--snapshot", "snapshot_id", required=True, help="whose held-out rows to judge on")
@click.option("--reward-model", type=click.Path(path_type=Path),
              help="judge generations with this reward model")  # fmt: skip
@click.option("--promote", "promote_now", is_flag=True, help="promote the candidate if it passes")
@click.option("--json", "as_json", is_flag=True, help="print the verdict and evidence as JSON")
@_ledger_options
def gate_command(**kwargs: Any) -> None:
    """Judge a candidate against the baseline on the snapshot's held-out rows, record the
    verdict; exit 1 when the candidate is rejected."""
    options = _ledger_args(kwargs)
    _finetune_installed()
    from driftline.finetune import registry
    from driftline.finetune.dataset.snapshots import SnapshotError
    from driftline.finetune.gate.evaluation import run_gate
    from driftline.finetune.model_folders import ModelError
    from driftline.finetune.training_data import DataError

    with _ledger(options) as (ledger, settings):
        config = settings.finetune
        reward = None
        if kwargs["reward_model"]:
            from driftline.finetune.rewards import RewardModel

            reward = RewardModel.load(kwargs["reward_model"]).score
        from driftline.finetune.gate.judge import GateJudgeError, gate_judge

        rubric = settings.review.rubric_for(ledger.project).criteria
        try:
            judge, audit = gate_judge(config.gate, settings.evaluators, ledger, rubric)
        except GateJudgeError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            version, verdict, _ = run_gate(
                ledger, kwargs["candidate"], kwargs["baseline"], kwargs["snapshot_id"], config,
                reward=reward, judge=judge, audit=audit,
            )  # fmt: skip
            if verdict.promote and kwargs["promote_now"]:
                version = registry.promote(ledger, version.version)
        except (DataError, SnapshotError, ModelError, VersionError) as exc:
            raise click.ClickException(str(exc)) from None
    if kwargs["as_json"]:
        click.echo(json.dumps(version.verdict | {"version": version.version}, indent=2))
    else:
        _print_verdict(version, verdict.reasons)
    if not verdict.promote:
        sys.exit(1)


def _print_verdict(version: ModelVersion, reasons: list[str]) -> None:
    v = version.verdict
    win = v["win_rate"]
    click.echo(f"candidate {version.version} ({version.path}) vs {v['baseline_version']}")
    click.echo(f"  held-out rows          {v['held_out_rows']}")
    click.echo(f"  preference accuracy    {v['preference_accuracy']:.3f}")
    click.echo(
        f"  win rate               {win['rate']:.1%} (95% CI {win['low']:.1%}-{win['high']:.1%},"
        f" n={win['n']}, by {win['source']})"
    )
    if v.get("judge"):
        j = v["judge"]
        rho = "undefined" if j["spearman"] is None else f"{j['spearman']:.3f}"
        click.echo(f"  judge Spearman         {rho} over {j['items']} items "
                   f"({j['source']}), {'trusted' if j['trusted'] else 'not trusted'}")  # fmt: skip
    for name, before in v["criteria_before"].items():
        click.echo(
            f"  {name:<22} {before:.3f} -> {v['criteria_after'].get(name, float('nan')):.3f}"
        )
    if reasons:
        click.echo("REJECTED: " + "; ".join(reasons))
    else:
        state = "promoted" if version.status == "promoted" else "passed"
        click.echo(f"{state.upper()}" + ("" if state == "promoted" else
                   f": driftline models promote {version.version}"))  # fmt: skip


@finetune_group.command("runs")
@click.argument("run_id", required=False)
@_ledger_options
def runs_command(run_id: str | None, **kwargs: Any) -> None:
    """List fine-tune runs, or show one with its last figures."""
    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        runs = ledger.runs(run_id)
    if run_id and not runs:
        raise click.ClickException(f"no fine-tune run {run_id!r}")
    for run in runs:
        done = f"{run.step}/{run.total_steps}" if run.total_steps else str(run.step)
        shown = run.error or _figures({k: v for k, v in run.summary.items() if k in _SHOWN})
        click.echo(f"{run.id}\t{run.method}\t{run.status}\tstep {done}\t{run.snapshot_id}\t{shown}")


# --- models ----------------------------------------------------------------------------------


@main.group(name="models")
def models_group() -> None:
    """The model registry: versions, the current one, promote and rollback."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@_ledger_options
def models_list(as_json: bool, **kwargs: Any) -> None:
    """Every version with its status; * marks the current one."""
    from driftline.finetune import registry

    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        versions, now = ledger.versions(), registry.current(ledger)
    for v in versions:
        mark = "*" if now is not None and v.version == now.version else " "
        if as_json:
            click.echo(json.dumps(v.to_json() | {"current": mark == "*"}))
            continue
        win = v.verdict.get("win_rate", {}).get("rate")
        judged = f"win rate {win:.1%}" if win is not None else "not gated"
        click.echo(f"{mark} {v.version}\t{v.status}\t{v.method or '-'}\t{judged}\t{v.path}")


@models_group.command("current")
@click.option("--path", "path_only", is_flag=True, help="print only the model's folder")
@_ledger_options
def models_current(path_only: bool, **kwargs: Any) -> None:
    """The version in service (exit 1 when there is none)."""
    from driftline.finetune import registry

    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        now = registry.current(ledger)
    if now is None:
        raise click.ClickException(f"project {ledger.project!r} has no promoted model yet")
    click.echo(now.path if path_only else f"{now.version}\t{now.path}")


@models_group.command("register")
@click.argument("path", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_ledger_options
def models_register(path: Path, **kwargs: Any) -> None:
    """Record a model folder (e.g. the one in service today) as a version."""
    from driftline.finetune import registry

    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        version = registry.baseline(ledger, path)
    click.echo(f"{version.version}\t{version.status}\t{version.path}")


@models_group.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="promote without a passing verdict")
@_ledger_options
def models_promote(version: str, force: bool, **kwargs: Any) -> None:
    """Make a version the current model."""
    from driftline.finetune import registry

    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        try:
            done = registry.promote(ledger, version, force=force)
        except VersionError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{done.version} is current ({done.path})")


@models_group.command("rollback")
@_ledger_options
def models_rollback(**kwargs: Any) -> None:
    """Take the current version out of service; the one promoted before it is current again."""
    from driftline.finetune import registry

    with _ledger(_ledger_args(kwargs)) as (ledger, _):
        try:
            back, now = registry.rollback(ledger)
        except VersionError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{back.version} rolled back; {now.version} is current ({now.path})")
