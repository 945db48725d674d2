"""`init`, `flush`, `shutdown`: the SDK's life in one process.

If the app already configured an OpenTelemetry SDK TracerProvider, driftline adds its processor
to that provider (the app's sampler and resource apply). Otherwise it creates a provider, makes
it the global one, and samples by trace id at `sample_rate`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from driftline.sdk.config import Config, Mask, load_config
from driftline.sdk.processor import ExportProcessor
from driftline.sdk.sampling import ratio_sampler
from driftline.sdk.threads import propagate_context_to_threads

logger = logging.getLogger("driftline.sdk")
SCOPE = "driftline.sdk"


@dataclass(frozen=True)
class Active:
    config: Config
    processor: ExportProcessor
    tracer: trace.Tracer


class _Relay(SpanProcessor):
    """Registered once on each provider; hands spans to the processor of the current `init`.

    OTel providers cannot drop a processor, so `shutdown` then `init` swaps the target instead.
    """

    target: ExportProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        target = self.target
        if target is not None:
            target.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        target = self.target
        return target.force_flush(timeout_millis) if target is not None else True


_RELAY = _Relay()
_lock = threading.RLock()
_active: Active | None = None
_rate = 1.0
_providers: weakref.WeakSet[TracerProvider] = weakref.WeakSet()  # providers holding _RELAY
_owned: weakref.WeakSet[TracerProvider] = weakref.WeakSet()  # providers driftline created
_exit_hook = False


def init(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    sample_rate: float | None = None,
    capture_content: bool | None = None,
    mask: Mask | None = None,
    spool_dir: str | Path | None = None,
    **settings: Any,
) -> Config:
    """Start sending spans and feedback to the collector; calling it again changes nothing.

    Unset arguments come from `DRIFTLINE_*` variables (see `config.ENV_VARS`); other settings
    (queue and batch sizes, timeouts, compression, ...) are the fields of `Config`.
    Raises `ConfigError` naming the setting when a value is unusable.
    """
    global _active, _rate, _exit_hook
    overrides = dict(
        settings,
        endpoint=endpoint,
        api_key=api_key,
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        sample_rate=sample_rate,
        capture_content=capture_content,
        mask=mask,
        spool_dir=spool_dir,
    )
    config = load_config(overrides)
    with _lock:
        if _active is not None:
            if _active.config != config:
                logger.warning(
                    "driftline.sdk.init was called again with other settings; they are ignored. "
                    "Call shutdown() first to change them."
                )
            return _active.config
        provider, owned = _provider(config)
        _rate = config.sample_rate
        processor = ExportProcessor(config, sample_in_processor=not owned)
        _RELAY.target = processor
        if config.propagate_to_threads:
            propagate_context_to_threads()
        _active = Active(config, processor, provider.get_tracer(SCOPE))
        if not _exit_hook:
            atexit.register(_shutdown_at_exit)
            _exit_hook = True
        return config


def active() -> Active | None:
    """The running configuration, or None before `init` and after `shutdown`."""
    return _active


def flush(timeout: float = 5.0) -> bool:
    """Send every queued span and feedback record now; True when nothing is left unsent."""
    current = _active
    if current is None:
        return True
    try:
        return current.processor.force_flush(int(timeout * 1000))
    except Exception:
        logger.exception("driftline flush failed")
        return False


def shutdown(timeout: float | None = None) -> None:
    """Flush, stop the worker thread, spool what is left (if spooling); `init` may follow."""
    global _active
    with _lock:
        current, _active = _active, None
        _RELAY.target = None
    if current is not None:
        try:
            current.processor.shutdown(timeout)
        except Exception:
            logger.exception("driftline shutdown failed")


def stats() -> dict[str, Any]:
    """Counters: spans sent, dropped (by reason), rejected, queued; feedback sent and dropped."""
    current = _active
    return current.processor.snapshot() if current is not None else {}


def _shutdown_at_exit() -> None:
    shutdown()


def _provider(config: Config) -> tuple[TracerProvider, bool]:
    """The app's SDK provider if it has one, else a new one of ours; and whether it is ours."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider) and current not in _owned:
        _attach(current)
        return current, False
    provider = TracerProvider(resource=_resource(config), sampler=ratio_sampler(lambda: _rate))
    _owned.add(provider)
    _attach(provider)
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(provider)
    return provider, True


def _attach(provider: TracerProvider) -> None:
    if provider not in _providers:
        provider.add_span_processor(_RELAY)
        _providers.add(provider)


def _resource(config: Config) -> Resource:
    attributes = {"service.name": config.service_name}
    if config.service_version:
        attributes["service.version"] = config.service_version
    if config.environment:
        attributes["deployment.environment.name"] = config.environment
    return Resource.create(attributes)
