"""The `driftline` command with every command group on it."""

from driftline.cli import (  # noqa: F401  (each module adds its commands to `main`)
    alerts,
    datasets,
    demo,
    detectors,
    evaluators,
    finetune,
    keys,
    migrate,
    serve,
)
from driftline.cli.group import main

__all__ = ["main"]
