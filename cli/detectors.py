"""`driftline embed`, `detect` and `reference`: the detectors as commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from driftline.cli.group import (
    DEFAULT_PROJECT,
    main,
    metrics_options,
    run_worker,
    settings_from,
    store_options,
)
from driftline.cli.store import exclusive_store


def _detectors_installed() -> None:
    try:
        import driftline.detectors.runner  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"the detectors are not installed ({exc}); pip install 'driftline[detectors]'"
        ) from None


@main.command()
@store_options
@click.option("--backfill", is_flag=True, help="embed every waiting call and every reference")
def embed(
    data: Path | None, clickhouse_url: str | None, config_file: Path | None, backfill: bool
) -> None:
    """Embed the prompts and responses of stored calls (one batch, or all with --backfill,
    references included: after a change of embedding model they are embedded again)."""
    _detectors_installed()
    from driftline.detectors.embedder import make_embedder
    from driftline.detectors.references import list_references, members_condition
    from driftline.detectors.runner import Runner

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with exclusive_store(settings, "embeds new calls") as store:
        # The folder is this command's alone: no insert can be in flight, nothing to settle.
        config = settings.detectors.model_copy(update={"embed_settle_seconds": 0.0})
        job = Runner(store, config, make_embedder(config)).embedding_job()
        if backfill:
            for reference in list_references(store):
                params: dict[str, Any] = {}
                members = members_condition(reference, config.max_samples, params)
                label = f"reference {reference.name} ({reference.calls} calls)"
                with click.progressbar(length=min(reference.calls, config.max_samples),
                                       label=label) as bar:  # fmt: skip
                    job.embed_where(reference.project, members, params, progress=bar.update)
        pending = job.pending()
        with click.progressbar(length=pending, label=f"embedding {pending} calls") as bar:
            done = job.backfill(bar.update, max_batches=None if backfill else 1)
        click.echo(f"embedded {done} calls; {job.pending()} left")


@main.command()
@store_options
@click.option("--once", is_flag=True, help="one pass, then exit")
@metrics_options(9464)
def detect(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    once: bool,
    metrics_host: str,
    metrics_port: int,
) -> None:
    """Run the detectors as their own process (with a ClickHouse server; set
    detectors.enabled = false for the `driftline serve` processes then)."""
    _detectors_installed()
    from driftline.detectors.scheduler import DetectorLoop, build_runner

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with exclusive_store(settings, "runs the detectors") as store:
        if once:
            for outcome in build_runner(store, settings.detectors).run_once():
                state = "DRIFTING" if outcome.drifting else "ok"
                tests = ", ".join(f"{r.test} p={r.p_value:.3g}" for r in outcome.results)
                click.echo(
                    f"{outcome.window_key}: {state} ({tests}); {outcome.flagged} flagged, "
                    f"{outcome.queued} queued"
                )
            return
        registry = CollectorRegistry()
        loop = DetectorLoop(store, settings.detectors, registry)
        # returns only if the model cannot be loaded (logged), or on Ctrl-C
        run_worker(loop, registry, metrics_host, metrics_port)


@main.group(name="reference")
def reference_group() -> None:
    """Freeze and list the references drift is measured against."""


@reference_group.command("create")
@store_options
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--name", required=True, help="reference name; a new version each time")
@click.option("--service", default=None, help="only calls of this service")
@click.option("--model", default=None, help="only calls answered by this model")
@click.option("--agent", default=None, help="only calls made inside this agent")
@click.option("--service-version", default=None, help="only calls of this service.version")
@click.option("--since", type=click.DateTime(), default=None, help="from this time (UTC)")
@click.option("--until", type=click.DateTime(), default=None, help="before this time (UTC)")
@click.option("--limit", type=int, default=None, help="the first N calls (after --since)")
def reference_create(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    project: str,
    name: str,
    service: str | None,
    model: str | None,
    agent: str | None,
    service_version: str | None,
    since: Any,
    until: Any,
    limit: int | None,
) -> None:
    """Freeze calls as a new reference version (or use POST /api/references on a server)."""
    from driftline.detectors.references import DriftReferenceError, create_reference

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    given = {"service": service, "model": model, "agent": agent, "version": service_version}
    scope = {k: v for k, v in given.items() if v}
    with exclusive_store(settings, "serves POST /api/references; use that, or") as store:
        try:
            ref = create_reference(
                store, project, name, scope, since=since, until=until, limit=limit
            )
        except DriftReferenceError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"reference {ref.name} version {ref.version}: {ref.calls} calls, scope {ref.scope}")


@reference_group.command("list")
@store_options
@click.option("--project", default=None, help="only this project's references")
def reference_list(
    data: Path | None, clickhouse_url: str | None, config_file: Path | None, project: str | None
) -> None:
    """The latest version of each reference."""
    from driftline.detectors.references import list_references

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with exclusive_store(settings, "serves GET /api/references; use that, or") as store:
        for ref in list_references(store, project):
            click.echo(f"{ref.project}\t{ref.name}\tv{ref.version}\t{ref.calls} calls\t{ref.scope}")
