"""The `driftline` group and what its commands share: store and metrics options, settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
from prometheus_client import CollectorRegistry, start_http_server

from driftline.api.config import ConfigError, Settings, load_settings
from driftline.store import env

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PROJECT = env.DEFAULT_PROJECT


def store_options(func: F) -> F:
    """--data, --clickhouse-url and --config, shared by every command that touches the store."""
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML settings file (also DRIFTLINE_CONFIG)",
    )(func)
    func = click.option(
        "--clickhouse-url",
        default=None,
        help="ClickHouse server, e.g. http://user:pass@host:8123/driftline",
    )(func)
    func = click.option(
        "--data",
        type=click.Path(path_type=Path),
        default=None,
        help="data folder [default: ./driftline-data]",
    )(func)
    return func


def metrics_options(default_port: int) -> Callable[[F], F]:
    """--metrics-host and --metrics-port, for the worker commands that serve no HTTP API."""

    def decorate(func: F) -> F:
        func = click.option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            default=default_port,
            show_default=True,
            envvar=env.METRICS_PORT,
            show_envvar=True,
            help="port for Prometheus /metrics while running; 0: off",
        )(func)
        return click.option(
            "--metrics-host",
            default=env.DEFAULT_HOST,
            show_default=True,
            envvar=env.METRICS_HOST,
            show_envvar=True,
            help="address for /metrics; 0.0.0.0 in a container",
        )(func)

    return decorate


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve the registry on http://HOST:PORT/metrics from a thread; returns how to stop it."""
    if port == 0:
        return lambda: None
    try:
        server, _ = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"driftline: metrics on http://{shown}:{port}/metrics", err=True)
    return server.shutdown


class Worker(Protocol):
    def start(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


def run_worker(loop: Worker, registry: CollectorRegistry, host: str, port: int) -> None:
    """Run a worker's loop with its /metrics until it ends or Ctrl-C stops it."""
    stop_metrics = serve_metrics(registry, host, port)
    loop.start()
    try:
        loop.join()
    except KeyboardInterrupt:
        loop.stop()
    finally:
        stop_metrics()


def settings_from(config_file: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config_file, **flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="driftline")
def main() -> None:
    """driftline: record, check and improve the LLM calls of your applications."""
