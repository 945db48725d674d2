"""The collector: OTLP ingest, write-ahead log, read API, metrics and the CLI."""


def main() -> None:
    """The `driftline` command; says which extra to install when only the SDK is present."""
    try:
        from driftline.collector.cli import main as cli
    except ImportError as exc:
        raise SystemExit(
            f"driftline: the command line needs the server extras ({exc.name} is missing): "
            "pip install 'driftline[server]'"
        ) from None
    cli()
