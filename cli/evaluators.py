"""`driftline eval run`: grade the calls of a past period with a configured evaluator."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from driftline.cli.group import main, settings_from, store_options
from driftline.cli.store import exclusive_store


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
    failed = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.failed.items()))
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(outcome.skipped.items()))
    click.echo(
        f"{outcome.read} calls read, {outcome.graded} graded; failed: {failed or 'none'}; "
        f"skipped: {skipped or 'none'}; ${outcome.cost_usd:.4f} spent"
    )
