"""`driftline serve`: the collector, detectors and alert engine in one process."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

import click

from driftline.api.config import ConfigError
from driftline.cli.group import DEFAULT_PROJECT, main, settings_from, store_options
from driftline.cli.local import FolderBusy, FolderLock, remove_control, write_control
from driftline.cli.store import open_settings_store
from driftline.store import Store, keys, resident


@main.command()
@store_options
@click.option("--host", default=None, help="address to listen on [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="port to listen on [default: 4318]")
@click.option(
    "--ack",
    type=click.Choice(["log", "store"]),
    default=None,
    help="acknowledge exports once in the local log, or once the ClickHouse server has them "
    "[default: store with --clickhouse-url, else log]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    host: str | None,
    port: int | None,
    ack: str | None,
    log_level: str,
) -> None:
    """Run the collector: OTLP ingest on /v1/traces, the API, /metrics."""
    resident.bound_heap()  # before the engine and the server start their threads
    import uvicorn

    from driftline.api.app import build_runtime, create_app

    settings = settings_from(
        config_file, data=data, clickhouse_url=clickhouse_url, host=host, port=port, ack=ack
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    lock = FolderLock(settings.data)
    try:
        lock.acquire()
    except FolderBusy as exc:
        raise click.ClickException(f"{exc}; is `driftline serve` already running on it?") from None
    token = "dlo_" + secrets.token_hex(24)
    try:
        store = open_settings_store(settings)
        try:
            runtime = build_runtime(settings, store, operator_token=token)
        except ConfigError as exc:
            store.close()
            raise click.ClickException(str(exc)) from None
        _bootstrap(store)
        app = create_app(runtime)
        local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        write_control(settings.data, f"http://{local_host}:{settings.port}", token)
        click.echo(
            f"driftline: listening on http://{settings.host}:{settings.port} "
            f"(OTLP/HTTP: /v1/traces), data in {settings.data}",
            err=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level=log_level,
                access_log=False,
                proxy_headers=True,
                forwarded_allow_ips=settings.forwarded_allow_ips,
                limit_concurrency=settings.max_concurrent_requests,
            )
        )
        try:
            server.run()
        finally:  # a signal or a crash in the loop still closes the engine cleanly
            store.close()
        if not server.started:
            sys.exit(1)
    finally:
        remove_control(settings.data)
        lock.release()


def _bootstrap(store: Store) -> None:
    """On first start, the `default` project with an ingest and a read key, printed once."""
    if keys.has_keys(store, DEFAULT_PROJECT):
        return
    _, ingest = keys.create_key(store, DEFAULT_PROJECT, "ingest", "created on first start")
    _, read = keys.create_key(store, DEFAULT_PROJECT, "read", "created on first start")
    click.echo(f"Created project '{DEFAULT_PROJECT}'. Keep these keys; they are not shown again.")
    click.echo(f"  ingest key: {ingest}")
    click.echo(f"  read key:   {read}")
    sys.stdout.flush()
