"""`driftline migrate`: bring a database to this driftline's schema, on one node or a cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from driftline.api.config import Settings
from driftline.cli.group import main, settings_from, store_options
from driftline.cli.local import FolderBusy, FolderLock
from driftline.cli.store import open_settings_store
from driftline.store import Store, StoreError
from driftline.store.cluster import ClusterLayout
from driftline.store.migrations import Layout, migrate, pending


@main.command(name="migrate")
@store_options
@click.option("--cluster", default=None,
              help="a ClickHouse cluster's name: replicated local tables behind Distributed ones, "
              "every statement ON CLUSTER (with --clickhouse-url)")  # fmt: skip
@click.option("--print", "show", is_flag=True, help="print the statements; run nothing")
def migrate_command(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    cluster: str | None,
    show: bool,
) -> None:
    """Apply the migrations the database lacks, in order (running it again does nothing);
    refuse a database newer than this driftline. `serve` migrates at start; run this first
    when a ClickHouse server is shared by several processes, or a cluster needs its layout."""
    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    if cluster and not settings.clickhouse_url:
        raise click.UsageError("--cluster needs --clickhouse-url (the embedded store is one node)")
    with _store(settings) as store:
        try:
            layout = ClusterLayout(cluster, store.database) if cluster else Layout()
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cluster") from None
        try:
            if show:
                _print(store, layout)
                return
            done = migrate(store, layout)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    where = "the ClickHouse server" if settings.clickhouse_url else str(settings.data)
    if done:
        click.echo(f"{where}: applied {', '.join(map(str, done))}; now at version {done[-1]}")
    else:
        click.echo(f"{where}: up to date")


def _print(store: Store, layout: Layout) -> None:
    for statement in layout.setup():
        click.echo(statement + ";")
    for migration, statements in pending(store, layout):
        click.echo(f"-- {migration.version}: {migration.name}")
        for statement in statements:
            click.echo(statement + ";")


@contextlib.contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The store, unmigrated; a data folder only when no other process holds it."""
    lock = None
    if not settings.clickhouse_url:
        try:
            lock = FolderLock(settings.data).acquire()
        except FolderBusy:
            raise click.ClickException(
                f"{settings.data} is held by a running driftline, which migrated it at start"
            ) from None
    store = open_settings_store(settings)
    try:
        yield store
    finally:
        store.close()
        if lock is not None:
            lock.release()
