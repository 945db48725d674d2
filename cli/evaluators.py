"""`driftline eval run`: grade the calls of a past period with a configured evaluator."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from driftline.cli.group import main, metrics_options, run_worker, settings_from, store_options
from driftline.cli.store import exclusive_store

if TYPE_CHECKING:
    from driftline.evaluators.runner import PassOutcome


@main.group(name="eval")
def eval_group() -> None:
    """Online evaluators: grade production calls ([evaluators.NAME] in the config)."""


@eval_group.command("run")
@store_options
@click.option("--evaluator", "name", required=True, help="an [evaluators.NAME] of the config")
@click.option("--since", type=click.DateTime(), required=True, help="calls that arrived from (UTC)")
@click.option(
    "--until", type=click.DateTime(), default=None, help="and before (UTC) [default: now]"
)
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
def eval_run(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    name: str,
    since: datetime,
    until: datetime | None,
    batch: int,
) -> None:
    """Grade a backfill: sample, budgets and cost cap as live; nothing graded twice."""
    from driftline.evaluators.metrics import EvaluatorMetrics
    from driftline.evaluators.runner import Evaluator
    from driftline.store.times import to_ns

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    config = settings.evaluators.get(name)
    if config is None:
        known = (
            ", ".join(sorted(settings.evaluators)) or "none: add [evaluators.NAME] to the config"
        )
        raise click.BadParameter(
            f"no evaluator {name!r}; configured: {known}", param_hint="--evaluator"
        )
    since_ns, until_ns = to_ns(since), to_ns(until) if until else time.time_ns()
    if until_ns <= since_ns:
        raise click.BadParameter("must be after --since", param_hint="--until")
    evaluator = Evaluator(name, config, settings.review, EvaluatorMetrics())
    with exclusive_store(settings, "runs the evaluators") as store:
        total = evaluator.arrived_count(store, since_ns, until_ns)
        with click.progressbar(length=total, label=f"{name}@{config.version}", file=None) as bar:
            outcome = evaluator.backfill(store, since_ns, until_ns, batch, bar.update)
    click.echo(_summary(outcome))


@eval_group.command("worker")
@store_options
@click.option("--once", is_flag=True, help="one pass of every evaluator, then exit")
@metrics_options(9466)
def eval_worker(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    once: bool,
    metrics_host: str,
    metrics_port: int,
) -> None:
    """Run the online evaluators as their own process (with a ClickHouse server and several
    collectors: one worker grades, and evaluation.enabled = false on the `serve` processes, so
    no call is sent to a judge twice)."""
    from prometheus_client import CollectorRegistry

    from driftline.evaluators.runner import EvaluatorLoop

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.evaluators:  # a deployment's worker waits for its first [evaluators.NAME]
        click.echo("driftline: no evaluator is configured ([evaluators.NAME])", err=True)
    registry = CollectorRegistry()
    with exclusive_store(settings, "runs the evaluators") as store:
        loop = EvaluatorLoop.configured(
            store, settings.evaluators, settings.evaluation, settings.review, settings.detectors,
            registry,
        )  # fmt: skip
        if once:
            for name, outcome in loop.run_once().items():
                click.echo(f"{name}: {_summary(outcome)}")
            return
        run_worker(loop, registry, metrics_host, metrics_port)


def _summary(outcome: PassOutcome) -> str:
    failed = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.failed.items()))
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.skipped.items()))
    return (
        f"{outcome.read} calls read, {outcome.graded} graded; failed: {failed or 'none'}; "
        f"skipped: {skipped or 'none'}; ${outcome.cost_usd:.4f} spent"
    )
