"""The `driftline` command line."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from prometheus_client import CollectorRegistry, start_http_server

from driftline.collector import keys
from driftline.collector.config import ConfigError, Settings, load_settings
from driftline.collector.local import (
    FolderBusy,
    FolderLock,
    read_control,
    remove_control,
    write_control,
)
from driftline.store import Store, StoreError, migrate, open_store

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PROJECT = "default"


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
            envvar="DRIFTLINE_METRICS_PORT",
            show_envvar=True,
            help="port for Prometheus /metrics while running; 0: off",
        )(func)
        return click.option(
            "--metrics-host",
            default="127.0.0.1",
            show_default=True,
            envvar="DRIFTLINE_METRICS_HOST",
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


def settings_from(config_file: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config_file, **flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="driftline")
def main() -> None:
    """driftline: record, check and improve the LLM calls of your applications."""


@main.command()
@store_options
@click.option("--host", default=None, help="address to listen on [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="port to listen on [default: 4318]")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    host: str | None,
    port: int | None,
    log_level: str,
) -> None:
    """Run the collector: OTLP ingest on /v1/traces, the API, /metrics."""
    import uvicorn

    from driftline.collector.app import build_runtime, create_app

    settings = settings_from(
        config_file, data=data, clickhouse_url=clickhouse_url, host=host, port=port
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    lock = FolderLock(settings.data)
    try:
        lock.acquire()
    except FolderBusy as exc:
        raise click.ClickException(f"{exc}; is `driftline serve` already running on it?") from None
    token = "dlo_" + secrets.token_hex(24)
    try:
        store = _open(settings)
        try:
            runtime = build_runtime(settings, store, operator_token=token)
        except ConfigError as exc:
            store.close()
            raise click.ClickException(str(exc)) from None
        _bootstrap(store)
        app = create_app(runtime)
        local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        write_control(settings.data, f"http://{local_host}:{settings.port}", token)
        click.echo(
            f"driftline: listening on http://{settings.host}:{settings.port} "
            f"(OTLP/HTTP: /v1/traces), data in {settings.data}",
            err=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level=log_level,
                access_log=False,
                limit_concurrency=settings.max_concurrent_requests,
            )
        )
        server.run()
        store.close()
        if not server.started:
            sys.exit(1)
    finally:
        remove_control(settings.data)
        lock.release()


def _open(settings: Settings) -> Store:
    try:
        return open_store(settings.data, settings.clickhouse_url)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _bootstrap(store: Store) -> None:
    """On first start, the `default` project with an ingest and a read key, printed once."""
    if keys.has_keys(store, DEFAULT_PROJECT):
        return
    _, ingest = keys.create_key(store, DEFAULT_PROJECT, "ingest", "created on first start")
    _, read = keys.create_key(store, DEFAULT_PROJECT, "read", "created on first start")
    click.echo(f"Created project '{DEFAULT_PROJECT}'. Keep these keys; they are not shown again.")
    click.echo(f"  ingest key: {ingest}")
    click.echo(f"  read key:   {read}")
    sys.stdout.flush()


class _ServerKeys:
    """Key operations through the running server's admin API (it owns the embedded store)."""

    def __init__(self, url: str, token: str) -> None:
        self._client = httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach the running driftline server: {exc}"
            ) from None
        if response.status_code >= 400:
            raise click.ClickException(response.json().get("error", response.text))
        return response.json()


@contextmanager
def _migrated(settings: Settings) -> Iterator[Store]:
    store = _open(settings)
    try:
        migrate(store)
        yield store
    finally:
        store.close()


@contextmanager
def _key_store(settings: Settings) -> Iterator[Store | _ServerKeys]:
    """The store itself when this process may open it, else the server that holds it."""
    if settings.clickhouse_url:
        with _migrated(settings) as store:
            yield store
        return
    lock = FolderLock(settings.data)
    try:
        lock.acquire()
    except FolderBusy:
        control = read_control(settings.data)
        if control is None:
            raise click.ClickException(
                f"{settings.data} is held by another process that is not a driftline server"
            ) from None
        yield _ServerKeys(control["url"], control["token"])
        return
    try:
        with _migrated(settings) as store:
            yield store
    finally:
        lock.release()


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
    with _key_store(settings) as target:
        if isinstance(target, _ServerKeys):
            key = target.call(
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
    with _key_store(settings) as target:
        if isinstance(target, _ServerKeys):
            rows = target.call(
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
    with _key_store(settings) as target:
        if isinstance(target, _ServerKeys):
            target.call("DELETE", f"/api/admin/keys/{key_id}")
        else:
            try:
                keys.revoke_key(target, key_id)
            except keys.KeysError as exc:
                raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key_id}", err=True)


@contextmanager
def _exclusive_store(settings: Settings, what: str) -> Iterator[Store]:
    """The store for a command that must own it: a server, or a data folder no one holds."""
    if settings.clickhouse_url:
        with _migrated(settings) as store:
            yield store
        return
    lock = FolderLock(settings.data)
    try:
        lock.acquire()
    except FolderBusy:
        raise click.ClickException(
            f"`driftline serve` holds {settings.data} and already {what} itself; run this "
            "command with --clickhouse-url, or stop the server first"
        ) from None
    try:
        with _migrated(settings) as store:
            yield store
    finally:
        lock.release()


def _detectors_installed() -> None:
    try:
        import driftline.detectors.runner  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"the detectors are not installed ({exc}); pip install 'driftline[detectors]'"
        ) from None


@main.command()
@store_options
@click.option("--backfill", is_flag=True, help="embed every waiting call and every reference")
def embed(
    data: Path | None, clickhouse_url: str | None, config_file: Path | None, backfill: bool
) -> None:
    """Embed the prompts and responses of stored calls (one batch, or all with --backfill,
    references included: after a change of embedding model they are embedded again)."""
    _detectors_installed()
    from driftline.detectors.embedder import make_embedder
    from driftline.detectors.references import list_references, members_condition
    from driftline.detectors.runner import Runner

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with _exclusive_store(settings, "embeds new calls") as store:
        # The folder is this command's alone: no insert can be in flight, nothing to settle.
        config = settings.detectors.model_copy(update={"embed_settle_seconds": 0.0})
        job = Runner(store, config, make_embedder(config)).embedding_job()
        if backfill:
            for reference in list_references(store):
                params: dict[str, Any] = {}
                members = members_condition(reference, config.max_samples, params)
                label = f"reference {reference.name} ({reference.calls} calls)"
                with click.progressbar(length=min(reference.calls, config.max_samples),
                                       label=label) as bar:  # fmt: skip
                    job.embed_where(reference.project, members, params, progress=bar.update)
        pending = job.pending()
        with click.progressbar(length=pending, label=f"embedding {pending} calls") as bar:
            done = job.backfill(bar.update, max_batches=None if backfill else 1)
        click.echo(f"embedded {done} calls; {job.pending()} left")


@main.command()
@store_options
@click.option("--once", is_flag=True, help="one pass, then exit")
@metrics_options(9464)
def detect(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    once: bool,
    metrics_host: str,
    metrics_port: int,
) -> None:
    """Run the detectors as their own process (with a ClickHouse server; set
    detectors.enabled = false for the `driftline serve` processes then)."""
    _detectors_installed()
    from driftline.detectors.scheduler import DetectorLoop, build_runner

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _exclusive_store(settings, "runs the detectors") as store:
        if once:
            for outcome in build_runner(store, settings.detectors).run_once():
                state = "DRIFTING" if outcome.drifting else "ok"
                tests = ", ".join(f"{r.test} p={r.p_value:.3g}" for r in outcome.results)
                click.echo(
                    f"{outcome.window_key}: {state} ({tests}); {outcome.flagged} flagged, "
                    f"{outcome.queued} queued"
                )
            return
        registry = CollectorRegistry()
        loop = DetectorLoop(store, settings.detectors, registry)
        stop_metrics = serve_metrics(registry, metrics_host, metrics_port)
        loop.start()
        try:
            loop.join()  # returns only if the model cannot be loaded (logged)
        except KeyboardInterrupt:
            loop.stop()
        finally:
            stop_metrics()


@main.group(name="reference")
def reference_group() -> None:
    """Freeze and list the references drift is measured against."""


@reference_group.command("create")
@store_options
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--name", required=True, help="reference name; a new version each time")
@click.option("--service", default=None, help="only calls of this service")
@click.option("--model", default=None, help="only calls answered by this model")
@click.option("--agent", default=None, help="only calls made inside this agent")
@click.option("--service-version", default=None, help="only calls of this service.version")
@click.option("--since", type=click.DateTime(), default=None, help="from this time (UTC)")
@click.option("--until", type=click.DateTime(), default=None, help="before this time (UTC)")
@click.option("--limit", type=int, default=None, help="the first N calls (after --since)")
def reference_create(
    data: Path | None,
    clickhouse_url: str | None,
    config_file: Path | None,
    project: str,
    name: str,
    service: str | None,
    model: str | None,
    agent: str | None,
    service_version: str | None,
    since: Any,
    until: Any,
    limit: int | None,
) -> None:
    """Freeze calls as a new reference version (or use POST /api/references on a server)."""
    from driftline.detectors.references import ReferenceError, create_reference

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    given = {"service": service, "model": model, "agent": agent, "version": service_version}
    scope = {k: v for k, v in given.items() if v}
    with _exclusive_store(settings, "serves POST /api/references; use that, or") as store:
        try:
            ref = create_reference(
                store, project, name, scope, since=since, until=until, limit=limit
            )
        except ReferenceError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"reference {ref.name} version {ref.version}: {ref.calls} calls, scope {ref.scope}")


@reference_group.command("list")
@store_options
@click.option("--project", default=None, help="only this project's references")
def reference_list(
    data: Path | None, clickhouse_url: str | None, config_file: Path | None, project: str | None
) -> None:
    """The latest version of each reference."""
    from driftline.detectors.references import list_references

    settings = settings_from(config_file, data=data, clickhouse_url=clickhouse_url)
    with _exclusive_store(settings, "serves GET /api/references; use that, or") as store:
        for ref in list_references(store, project):
            click.echo(f"{ref.project}\t{ref.name}\tv{ref.version}\t{ref.calls} calls\t{ref.scope}")


# Commands of other rooms register themselves on `main`.
from driftline.collector import cli_alerts, cli_datasets, cli_finetune  # noqa: E402, F401
