"""The `driftline` command: serve, keys, detectors, alerts, datasets and fine-tunes."""


def main() -> None:
    """The `driftline` command; says which extra to install when only the SDK is present."""
    try:
        from driftline.cli.commands import main as cli
    except ImportError as exc:
        raise SystemExit(
            f"driftline: the command line needs the server extras ({exc.name} is missing): "
            "pip install 'driftline[server]'"
        ) from None
    cli()
