"""The collector's FastAPI app: the runtime behind it, its routers (one per resource) and errors."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from driftline.alerts.engine import AlertEngine, AlertLoop
from driftline.alerts.rules import RulesError, load_rules
from driftline.api.budget import BodiesBusy, BodyBudget, BodyOverBudget
from driftline.api.config import ConfigError, Settings
from driftline.api.gate import BodyTooLarge, RequestGate
from driftline.api.ratelimit import RateLimiter
from driftline.api.routes import ROUTERS
from driftline.api.routes.evaluators import live_comparisons
from driftline.api.routes.ingest import OTLP_PATHS
from driftline.api.runtime import ApiError, Runtime, SpanWriter
from driftline.evaluators.agreement import judges_table
from driftline.evaluators.runner import EvaluatorLoop
from driftline.finetune import overview as finetune_overview
from driftline.finetune.metrics import ModelMetrics
from driftline.ingest import otlp
from driftline.ingest.committer import StoreCommitter, confirm_settings
from driftline.ingest.mapping import SpanDecoder
from driftline.ingest.metrics import CollectorMetrics
from driftline.ingest.pricing import PriceTable
from driftline.ingest.wal import WriteAheadLog
from driftline.ingest.writer import Writer
from driftline.review import explorer
from driftline.review import web as review_routes
from driftline.review.sessions import Sessions
from driftline.store import Store, StoreError, apply_retention, migrate
from driftline.store.embedded import EmbeddedStore
from driftline.store.errors import InputError
from driftline.store.keys import KeyChecker

log = logging.getLogger(__name__)


def build_runtime(settings: Settings, store: Store, operator_token: str | None = None) -> Runtime:
    """Migrate the store and wire the log, writer, key checks and metrics around it."""
    migrate(store)
    apply_retention(store, settings.retention_days)
    metrics = CollectorMetrics(settings.max_label_series)
    ModelMetrics(store, metrics.registry)
    writer = span_writer(settings, store, metrics)
    metrics.track_backlog(writer.backlog_bytes)
    alerts = alert_loop(settings, store, metrics.registry)
    return Runtime(
        evaluators=evaluator_loop(settings, store, metrics.registry),
        detectors=_detector_loop(settings, store, metrics, alerts),
        alerts=alerts,
        settings=settings,
        store=store,
        writer=writer,
        keys=KeyChecker(store, settings.key_cache_seconds, operator_token),
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        heavy_limiter=RateLimiter(
            settings.heavy_rate_limit_per_second, settings.heavy_rate_limit_burst
        ),
        metrics=metrics,
        metrics_token=_metrics_token(settings),
    )


def span_writer(settings: Settings, store: Store, metrics: CollectorMetrics) -> SpanWriter:
    """The log and its writer (ack = "log"), or the committer to the server (ack = "store")."""
    decoder = SpanDecoder(
        decode_engine(store, settings),
        settings.data / "spool",
        PriceTable({k: v.price() for k, v in settings.prices.items()}),
    )
    if (settings.ack or ("log" if isinstance(store, EmbeddedStore) else "store")) == "store":
        return StoreCommitter(
            store,
            decoder,
            metrics,
            settings.writer_batch_bytes,
            confirm_settings(settings.insert_quorum),
        )
    wal = WriteAheadLog(
        settings.data / "wal", settings.wal_segment_bytes, settings.wal_budget_bytes
    )
    return Writer(
        wal, store, decoder, metrics, settings.writer_batch_bytes, settings.writer_flush_interval
    )


def _metrics_token(settings: Settings) -> str | None:
    """The token /metrics requires, from its file (a Docker or Kubernetes secret)."""
    path = settings.metrics_token_file
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"metrics_token_file: cannot read {path}: {exc.strerror}") from None
    if not token or not token.isascii():
        raise ConfigError(f"metrics_token_file: {path} must hold an ASCII token")
    return token


def decode_engine(store: Store, settings: Settings) -> EmbeddedStore:
    """chDB decodes spans: the embedded store itself, or a private one beside a server store."""
    if isinstance(store, EmbeddedStore):
        return store
    return EmbeddedStore(settings.data / "decoder", limits=settings.engine_limits())


_INGEST_PATHS = OTLP_PATHS | {"/api/feedback"}


def alert_loop(
    settings: Settings, store: Store, registry: CollectorRegistry | None
) -> AlertLoop | None:
    """The alert engine's loop, or None when off or without a rules file."""
    config = settings.alerts
    if not config.enabled or config.rules_file is None:
        return None
    try:
        rules = load_rules(config.rules_file)
    except RulesError as exc:
        raise ConfigError(f"alerts.rules_file: {exc}") from None
    external = config.external_url or f"http://{settings.host}:{settings.port}"
    engine = AlertEngine(store, rules, config, external, settings.data, registry)
    return AlertLoop(engine)


def evaluator_loop(
    settings: Settings, store: Store, registry: CollectorRegistry | None
) -> EvaluatorLoop | None:
    """The online evaluators' loop, or None when none is configured or evaluation is off."""
    if not settings.evaluators or not settings.evaluation.enabled:
        return None
    return EvaluatorLoop.configured(
        store, settings.evaluators, settings.evaluation, settings.review, settings.detectors,
        registry,
    )  # fmt: skip


def _detector_loop(
    settings: Settings, store: Store, metrics: CollectorMetrics, alerts: AlertLoop | None
) -> Any:
    """The detectors' background loop, or None when off or not installed (logged once).
    After each pass the alert engine evaluates at once, so drift alerts without delay."""
    if not settings.detectors.enabled:
        return None
    try:
        from driftline.detectors.scheduler import DetectorLoop
    except ImportError as exc:
        log.warning("detectors are off: %s; pip install 'driftline[detectors]'", exc)
        return None
    on_pass = (lambda _outcomes: alerts.poke()) if alerts is not None else None
    return DetectorLoop(store, settings.detectors, metrics.registry, on_pass)


def create_app(rt: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.writer.start()
        for loop in (rt.alerts, rt.detectors, rt.evaluators):
            if loop is not None:
                loop.start()
        rt.writer.decoder.engine.release_memory()  # what only start-up needed
        try:
            yield
        finally:
            for loop in (rt.evaluators, rt.detectors, rt.alerts):
                if loop is not None:
                    loop.stop()
            rt.writer.stop()
            rt.writer.close()
            if rt.writer.decoder.engine is not rt.store:  # the private one beside a server's
                rt.writer.decoder.engine.close()

    app = FastAPI(
        title="driftline collector",
        summary="OTLP/HTTP ingest of LLM calls into ClickHouse, and the API to read them.",
        lifespan=lifespan,
        # Never trace our own ingest: with OTel configured in this process, each request
        # would make spans that come back as requests, without end.
        telemetry={"exclude": lambda scope: scope.get("path") in _INGEST_PATHS},
    )
    app.state.runtime = rt
    app.add_middleware(
        RequestGate,
        check_key=rt.keys.check,
        max_body_bytes=rt.settings.max_body_bytes,
        budget=BodyBudget(rt.settings.max_inflight_body_bytes),
    )
    app.state.review = review_routes.ReviewSite(
        rt.store,
        rt.settings.review,
        rt.keys.check,
        rt.keys.by_id,
        Sessions(rt.store, rt.settings.review.session_hours * 3600),
        limit=rt.limiter.acquire,
        heavy=rt.heavy_limiter.acquire,
        charts=[finetune_overview.charts],
        models=finetune_overview.model_versions,
        judges=lambda store, project: judges_table(
            store, project, rt.settings.evaluators, time.time_ns()
        ),
        experiments=lambda store, project: live_comparisons(store, project, rt.settings)[1],
    )
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(review_routes.router)
    app.include_router(explorer.router)
    # follow_symlink: an editable (strict) install serves these files through links.
    app.mount(
        "/review/static",
        StaticFiles(directory=review_routes.HERE / "static", follow_symlink=True),
        "review-static",
    )
    app.add_exception_handler(review_routes.SignIn, review_routes.sign_in_handler)  # type: ignore[arg-type]
    app.add_exception_handler(review_routes.CrossSite, review_routes.cross_site_handler)  # type: ignore[arg-type]
    app.add_exception_handler(review_routes.Refused, review_routes.refused_handler)  # type: ignore[arg-type]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if request.url.path in OTLP_PATHS:
            rt.metrics.requests.labels(str(exc.status)).inc()
            if exc.status != 429:
                rt.metrics.requests_rejected.labels(_REASONS.get(exc.status, "other")).inc()
            ctype = request.headers.get("content-type", "")
            media = otlp.PROTOBUF if ctype.startswith(otlp.PROTOBUF) else otlp.JSON
            return Response(
                otlp.status_body(exc.status, exc.message, media),
                exc.status,
                headers=exc.headers,
                media_type=media,
            )
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return await api_error(request, ApiError(413, exc.detail))

    @app.exception_handler(BodiesBusy)
    @app.exception_handler(BodyOverBudget)
    async def over_budget(request: Request, exc: BodiesBusy | BodyOverBudget) -> Response:
        return await api_error(
            request, ApiError(exc.status_code, exc.detail, dict(exc.headers or {}))
        )

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> Response:
        return await api_error(request, ApiError(exc.status, str(exc)))

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> Response:
        log.error("store error on %s: %s", request.url.path, exc)
        return JSONResponse(
            {"error": "the store is unavailable; try again shortly"},
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def bad_params(request: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, 400)

    return app


_REASONS = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}
