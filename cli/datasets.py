"""`driftline export`: reviewed feedback as training data, recorded as a dataset snapshot."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from driftline.cli.client import Client, server_options
from driftline.cli.group import (
    DEFAULT_PROJECT,
    main,
    settings_from,
    store_options,
)
from driftline.cli.store import exclusive_store
from driftline.finetune.dataset.files import held_out_path, write_splits
from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.formats import FORMATS
from driftline.finetune.dataset.snapshots import record_snapshot


@main.command(name="export")
@store_options
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="train rows here; test rows beside it as <stem>.test<suffix>")  # fmt: skip
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--since", type=click.DateTime(), default=None, help="feedback from (UTC)")
@click.option("--until", type=click.DateTime(), default=None, help="feedback up to (UTC)")
@click.option("--test-fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--plain", is_flag=True, help="plain strings instead of chat messages")
@click.option("--app-feedback", is_flag=True,
              help="the apps' feedback too (thumbs, app scores: source sdk/api), not only "
              "reviewers' judgements")  # fmt: skip
@server_options("an admin key: export through the running server's API")
def export_command(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    fmt: str,
    out: Path,
    project: str,
    since: datetime | None,
    until: datetime | None,
    test_fraction: float,
    plain: bool,
    app_feedback: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Write reviewers' feedback (and the apps', with --app-feedback) as TRL (dpo, kto,
    reward), OpenAI (openai-dpo), Argilla or Label Studio rows, split by conversation, and
    record the snapshot (its id is printed)."""
    options: dict[str, Any] = {
        "since": since, "until": until, "test_fraction": test_fraction,
        "conversational": not plain, "app_feedback": app_feedback,
    }  # fmt: skip
    if key:  # a running server holds the data folder: go through its API
        body = {"format": fmt, **{k: v.isoformat() + "Z" if isinstance(v, datetime) else v
                                  for k, v in options.items() if v is not None}}  # fmt: skip
        api = Client.local(url, key)
        snapshot = api.json("POST", "/api/datasets", json=body)
        files = [api.bytes("GET", f"/api/datasets/{snapshot['id']}/{split}")
                 for split in ("train", "test")]  # fmt: skip
        write_splits(out, files[0], files[1])
        counts = snapshot["counts"]
        snapshot_id = snapshot["id"]
    else:
        settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
        with exclusive_store(settings, "serves POST /api/datasets; pass --key, or") as store:
            filters = ExportFilters(project, **options)
            try:
                made, train, test = record_snapshot(store, fmt, filters)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            write_splits(out, train, test)
            counts, snapshot_id = made.counts, made.id
    rows = counts["rows"]
    click.echo(
        f"{out}: {rows['train']} rows, {held_out_path(out)}: {rows['test']} rows; "
        f"skipped {json.dumps(counts['skipped'])}",
        err=True,
    )
    click.echo(snapshot_id)
