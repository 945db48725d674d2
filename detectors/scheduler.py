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
    from driftline.detectors.embedder import make_embedder

    return Runner(store, settings, make_embedder(settings), metrics)


class DetectorLoop:
    """Two threads until stopped: one embeds new calls as they come (so a long test pass never
    holds up embedding), one tests windows every `interval_seconds`; errors are logged."""

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
        self._embedder = threading.Thread(
            target=self._embed_loop, name="driftline-embedder", daemon=True
        )
        self.runner: Runner | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in (self._thread, self._embedder):
            if thread.is_alive():
                thread.join(timeout)

    def _run(self) -> None:
        try:
            self.runner = build_runner(self._store, self._settings, self._metrics)
        except Exception:
            log.exception("detectors are off: the embedding model could not be loaded")
            return
        self._embedder.start()
        while not self._stop.is_set():
            try:
                outcomes = self.runner.test()
                if self._on_pass is not None:
                    self._on_pass(outcomes)
            except Exception:
                log.exception("detector pass failed; next in %ss", self._settings.interval_seconds)
            self._stop.wait(self._settings.interval_seconds)

    def _embed_loop(self) -> None:
        assert self.runner is not None
        while not self._stop.is_set():
            pending = 0
            try:
                pending = self.runner.embed(self._stop.is_set).pending
            except Exception:
                log.exception("embedding failed; retrying in %ss", self._settings.interval_seconds)
                self._stop.wait(self._settings.interval_seconds)
            if not pending:
                self._stop.wait(self._settings.embed_idle_seconds)
