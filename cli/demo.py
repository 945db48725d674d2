"""`driftline demo`: the whole loop on a temporary store, shown stage by stage."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from driftline.cli.group import main


@main.command()
@click.option("--fast", is_flag=True, help="smaller windows and model: a few minutes on 2 cores")
@click.option("--open", "open_browser", is_flag=True,
              help="open the review UI and judge calls yourself, then the scripted reviewer "
              "judges the rest")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, for programs")
@click.option("--keep", is_flag=True, help="keep the temporary folder (data, models, logs)")
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False),
              help="work in this folder instead of a temporary one (kept)")  # fmt: skip
@click.option("--force", is_flag=True, help="use --dir even if it holds files already")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="the service's port on 127.0.0.1 [default: a free one]")  # fmt: skip
@click.option("--wait/--no-wait", default=None,
              help="keep the service up after the summary until Enter "
              "[default: on a terminal]")  # fmt: skip
def demo(
    fast: bool,
    open_browser: bool,
    as_json: bool,
    keep: bool,
    folder: Path | None,
    force: bool,
    port: int,
    wait: bool | None,
) -> None:
    """Run the whole loop on a temporary store: an instrumented app's calls, a reference, drift
    injected and detected, the review queue, a signed alert, reviews, a DPO export, a tiny
    model's fine-tune, the gate and the promotion."""
    from driftline.demo.run import Options, run

    if wait is None:
        wait = sys.stdin.isatty() and not as_json
    sys.exit(run(Options(fast, as_json, open_browser, keep, folder, force, port, wait)))
