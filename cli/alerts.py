"""`driftline rules check`, `driftline silence ...` and `driftline alerts`: the alert commands."""

from __future__ import annotations

import getpass
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from driftline.alerts.rules import RulesError, load_rules
from driftline.cli.client import Client, server_options
from driftline.cli.group import (
    main,
    metrics_options,
    serve_metrics,
    settings_from,
    store_options,
)
from driftline.cli.store import exclusive_store


@main.group(name="rules")
def rules_group() -> None:
    """Alert rules files."""


@rules_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def rules_check(files: tuple[Path, ...]) -> None:
    """Validate rules files; each mistake is printed as FILE:LINE: problem."""
    failed = False
    for path in files:
        try:
            rules = load_rules(path)
        except RulesError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        click.echo(
            f"{path}: ok: {len(rules.rules)} rules, {len(rules.receivers)} receivers, "
            f"{len(rules.inhibit_rules)} inhibit rules, {len(rules.alertmanagers)} Alertmanagers"
        )
    if failed:
        raise SystemExit(1)


# -- silences, through the API of a running collector (as amtool does) --------------------------


_api_options = server_options("a project key (admin to add or expire)", key_required=True)


@main.group(name="silence")
def silence_group() -> None:
    """Silences: mute alerts whose labels match, until they expire."""


@silence_group.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--duration", default=None, help="how long, e.g. 2h [default: 1h without --until]")
@click.option("--until", "ends_at", default=None, help="end time, RFC 3339")
@click.option("--comment", required=True, help="why")
@click.option("--author", default=None, help="who [default: the login name]")
@_api_options
def silence_add(
    matchers: tuple[str, ...],
    duration: str | None,
    ends_at: str | None,
    comment: str,
    author: str | None,
    url: str | None,
    key: str,
) -> None:
    """Silence alerts matching every MATCHER, e.g. alertname="EmbeddingDrift" service=~"bot.*"."""
    body: dict[str, Any] = {
        "matchers": list(matchers),
        "comment": comment,
        "createdBy": author or getpass.getuser(),
    }
    if ends_at:
        body["endsAt"] = ends_at
    else:
        body["duration"] = duration or "1h"
    made = Client.local(url, key).json("POST", "/api/silences", json=body)
    click.echo(made["id"])


@silence_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="expired ones too")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@_api_options
def silence_list(show_all: bool, as_json: bool, url: str | None, key: str) -> None:
    """Active and pending silences."""
    for s in Client.local(url, key).json("GET", "/api/silences")["items"]:
        if not show_all and s["status"]["state"] == "expired":
            continue
        if as_json:
            click.echo(json.dumps(s))
        else:
            click.echo(
                f"{s['id']}\t{s['status']['state']}\t{' '.join(s['matchersText'])}\t"
                f"until {s['endsAt']}\t{s['createdBy']}: {s['comment']}"
            )


@silence_group.command("expire")
@click.argument("silence_ids", nargs=-1, required=True)
@_api_options
def silence_expire(silence_ids: tuple[str, ...], url: str | None, key: str) -> None:
    """End silences now."""
    for silence_id in silence_ids:
        Client.local(url, key).json("DELETE", f"/api/silences/{silence_id}")
        click.echo(f"expired {silence_id}", err=True)


# -- the engine as its own process ---------------------------------------------------------------


@main.command(name="alerts")
@store_options
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), default=None,
              help="rules file [default: alerts.rules_file of the settings]")  # fmt: skip
@click.option("--once", is_flag=True, help="evaluate and deliver once, then exit")
@metrics_options(9465)
def alerts_command(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    rules_file: Path | None,
    once: bool,
    metrics_host: str,
    metrics_port: int,
) -> None:
    """Run the alert engine as its own process (with a ClickHouse server; leave
    alerts.rules_file unset for the `driftline serve` processes then)."""
    from driftline.alerts.engine import AlertEngine, AlertLoop

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    path = rules_file or settings.alerts.rules_file
    if path is None:
        raise click.UsageError("no rules file: pass --rules or set alerts.rules_file")
    try:
        rules = load_rules(path)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    external = settings.alerts.external_url or f"http://{settings.host}:{settings.port}"
    with exclusive_store(settings, "evaluates its alert rules") as store:
        registry = CollectorRegistry()
        stop_metrics = serve_metrics(registry, metrics_host, 0 if once else metrics_port)
        engine = AlertEngine(store, rules, settings.alerts, external, settings.data, registry)
        if once:
            changed = engine.evaluate()
            sent = engine.deliver()
            if engine.retrain is not None:
                engine.retrain.wait()
            engine.close()
            for alert in changed:
                click.echo(f"{alert.rule}\t{alert.state}\t{alert.labels}")
            click.echo(f"{len(changed)} alerts changed; {sent} deliveries attempted", err=True)
            return
        loop = AlertLoop(engine)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        loop.start()
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
        finally:
            loop.stop()
            stop_metrics()
