"""The `driftline` command with every command group on it."""

from driftline.cli import alerts, datasets, detectors, finetune, keys, serve  # noqa: F401
from driftline.cli.group import main

__all__ = ["main"]
