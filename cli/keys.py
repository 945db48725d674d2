"""`driftline keys`: create, list and revoke API keys, on the store or through the server."""

from __future__ import annotations

import json
from pathlib import Path

import click

from driftline.cli.client import Client
from driftline.cli.group import main, settings_from, store_options
from driftline.cli.store import held_store
from driftline.store import keys


@main.group(name="keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@store_options
@click.option("--project", required=True, help="project name (created if missing)")
@click.option("--role", required=True, type=click.Choice(["ingest", "read", "review", "admin"]))
@click.option("--name", default="", help="a note to recognise the key by")
def keys_create(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    project: str,
    role: str,
    name: str,
) -> None:
    """Create a key and print it (only the key, on stdout)."""
    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    try:
        keys.check_project(project)
    except keys.KeysError as exc:
        raise click.BadParameter(str(exc), param_hint="--project") from None
    with held_store(settings) as target:
        if isinstance(target, Client):
            key = target.json(
                "POST", "/api/admin/keys", json={"project": project, "role": role, "name": name}
            )["key"]
        else:
            _, key = keys.create_key(target, project, role, name)
    click.echo(key)


@keys_group.command("list")
@store_options
@click.option("--project", default=None, help="only this project's keys")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
def keys_list(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    project: str | None,
    as_json: bool,
) -> None:
    """List keys: id, project, role, state (never the keys themselves)."""
    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with held_store(settings) as target:
        if isinstance(target, Client):
            rows = target.json(
                "GET", "/api/admin/keys", params={"project": project} if project else None
            )["items"]
        else:
            rows = keys.list_keys(target, project)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
        else:
            state = "revoked" if row["revoked"] else "active"
            click.echo(
                f"{row['key_id']}  {row['project_id']:<20} {row['role']:<7} {state:<8} "
                f"{row['created_at']}  {row['name']}"
            )


@keys_group.command("revoke")
@store_options
@click.argument("key_id")
def keys_revoke(
    data: Path | None, clickhouse_url: str | None, config_file: Path | None, key_id: str
) -> None:
    """Revoke a key by its id (the 12 hex characters after `dl_`)."""
    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with held_store(settings) as target:
        if isinstance(target, Client):
            target.json("DELETE", f"/api/admin/keys/{key_id}")
        else:
            try:
                keys.revoke_key(target, key_id)
            except keys.KeysError as exc:
                raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key_id}", err=True)
