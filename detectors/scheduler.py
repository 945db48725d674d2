"""Run detector passes on a background thread (inside `driftline serve`) or in a loop of its
own (`driftline detect`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from driftline.detectors.config import DetectorSettings
from driftline.detectors.metrics import DetectorMetrics
from driftline.detectors.runner import Runner, WindowOutcome
from driftline.store import Store

log = logging.getLogger("driftline.detectors")


def build_runner(
    store: Store, settings: DetectorSettings, metrics: DetectorMetrics | None = None
) -> Runner:
    """A runner with the configured embedding model (loading it takes a few seconds)."""
    from driftline.detectors.embedder import Embedder

    embedder = Embedder(settings.model_path, settings.device, settings.embed_batch)
    return Runner(store, settings, embedder, metrics)


class DetectorLoop:
    """Calls `Runner.run_once` every `interval_seconds` until stopped; errors are logged."""

    def __init__(
        self,
        store: Store,
        settings: DetectorSettings,
        registry: CollectorRegistry | None = None,
        on_pass: Callable[[list[WindowOutcome]], None] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        # Registered now, not after the model has loaded: the first scrape finds the series.
        self._metrics = DetectorMetrics(registry) if registry is not None else None
        self._on_pass = on_pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-detectors", daemon=True)
        self.runner: Runner | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.runner = build_runner(self._store, self._settings, self._metrics)
        except Exception:
            log.exception("detectors are off: the embedding model could not be loaded")
            return
        while not self._stop.is_set():
            try:
                outcomes = self.runner.run_once()
                if self._on_pass is not None:
                    self._on_pass(outcomes)
            except Exception:
                log.exception(
                    "detector pass failed; retrying in %ss", self._settings.interval_seconds
                )
            self._stop.wait(self._settings.interval_seconds)
