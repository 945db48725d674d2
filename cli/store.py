"""The one way a command gets the store: it takes the data folder's lock and migrates, or,
while `driftline serve` holds the folder, talks to that server instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from driftline.api.config import Settings
from driftline.cli.client import Client
from driftline.cli.local import FolderBusy, FolderLock, read_control
from driftline.store import Store, StoreError, migrate, open_store


def open_settings_store(settings: Settings) -> Store:
    try:
        return open_store(settings.data, settings.clickhouse_url, settings.engine_limits())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def held_store(settings: Settings) -> Iterator[Store | Client]:
    """The migrated store when this process may own it; else a client of the running server
    that holds the data folder, with its operator token."""
    lock = None
    if not settings.clickhouse_url:
        lock = FolderLock(settings.data)
        try:
            lock.acquire()
        except FolderBusy:
            control = read_control(settings.data)
            if control is None:
                raise click.ClickException(
                    f"{settings.data} is held by another process that is not a driftline server"
                ) from None
            yield Client(control["url"], control["token"])
            return
    store = open_settings_store(settings)
    try:
        migrate(store)
        yield store
    finally:
        store.close()
        if lock is not None:
            lock.release()


@contextmanager
def exclusive_store(settings: Settings, what: str) -> Iterator[Store]:
    """The store for a command that must own it: a server, or a data folder no one holds."""
    with held_store(settings) as target:
        if isinstance(target, Client):
            raise click.ClickException(
                f"`driftline serve` holds {settings.data} and already {what} itself; run this "
                "command with --clickhouse-url, or stop the server first"
            )
        yield target
