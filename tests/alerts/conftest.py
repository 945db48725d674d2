"""Fixtures for the alert engine: a controllable clock, rows in the tables rules read, and an
engine built on the real embedded ClickHouse."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from driftline.alerts.config import AlertSettings
from driftline.alerts.engine import AlertEngine
from driftline.alerts.rules import parse_rules
from driftline.store import Store, migrate, open_store
from tests.alerts.receiver import Receiver

T0 = 1_795_000_000.0  # 2026-11-18, a fixed "now" for engines on a fake clock
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def insert_calls(
    store: Store,
    at: float,
    n: int,
    errors: int = 0,
    project: str = "alpha",
    service: str = "bot",
    model: str = "m1",
    latency_ms: float = 500.0,
) -> None:
    """`n` calls spread over the second before `at`, the first `errors` of them failed."""
    first = int(at * 1e9) - 10**9
    ids = [secrets.token_hex(16) for _ in range(n)]  # unique: the table collapses equal keys
    times = pa.array(
        [first + i * (10**9 // max(n, 1)) for i in range(n)], pa.timestamp("ns", "UTC")
    )
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": [project] * n,
                "trace_id": ids,
                "span_id": [f"{i:016x}" for i in range(n)],
                "start_time": times,
                "end_time": times,
                "service": [service] * n,
                "response_model": [model] * n,
                "duration_ms": [latency_ms] * n,
                "status_code": ["error" if i < errors else "ok" for i in range(n)],
                "error_type": ["RateLimitError" if i < errors else "" for i in range(n)],
                "total_tokens": pa.array([100] * n, pa.uint32()),
            }
        ),
    )


def insert_window(
    store: Store,
    end: float,
    consecutive: int,
    project: str = "alpha",
    reference: str = "bot-v1",
    calls: int = 500,
    flags: dict[str, int] | None = None,
) -> str:
    """One tested detector window ending at `end`, as the detectors store it."""
    key = f"{reference}@1/{int(end * 1e9) - 10**9}-{int(end * 1e9)}"
    ns = pa.timestamp("ns", "UTC")
    store.insert_arrow(
        "detector_runs",
        pa.table(
            {
                "project_id": [project],
                "window_key": [key],
                "scope": pa.array([[("service", "bot")]], pa.map_(pa.string(), pa.string())),
                "reference": [reference],
                "reference_version": pa.array([1], pa.uint32()),
                "window_start": pa.array([int(end * 1e9) - 10**9], ns),
                "window_end": pa.array([int(end * 1e9)], ns),
                "n_current": pa.array([calls], pa.uint32()),
                "drifting": pa.array([int(consecutive > 0)], pa.uint8()),
                "consecutive": pa.array([consecutive], pa.uint32()),
                "flagged": pa.array([sum((flags or {}).values())], pa.uint32()),
                "flag_counts": pa.array(
                    [sorted((flags or {}).items())], pa.map_(pa.string(), pa.uint32())
                ),
            }
        ),
    )
    store.insert_arrow(
        "findings",
        pa.table(
            {
                "project_id": [project],
                "window_key": [key],
                "window_end": pa.array([int(end * 1e9)], ns),
                "detector": ["mmd"],
                "statistic": [0.5 if consecutive else 0.01],
                "p_value": [0.002 if consecutive else 0.6],
                "rejected": pa.array([int(consecutive > 0)], pa.uint8()),
            }
        ),
    )
    return key


EngineFactory = Callable[..., AlertEngine]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver that checks signatures made with SECRET."""
    with Receiver(secret=SECRET) as r:
        yield r


@pytest.fixture
def make_engine(store: Store, clock: Clock, tmp_path: Path) -> Iterator[EngineFactory]:
    """Build engines on the test's store (a new one on the same store is a restart)."""
    built: list[AlertEngine] = []

    def build(
        rules: str,
        registry: CollectorRegistry | None = None,
        on: Clock | None = None,
        **settings: object,
    ) -> AlertEngine:
        config = AlertSettings.model_validate(
            {"outbox": {"backoff_initial": 0.05, "backoff_max": 0.5}, **settings}
        )
        engine = AlertEngine(
            store, parse_rules(rules), config, "http://driftline.test", tmp_path, registry,
            on or clock,
        )  # fmt: skip
        built.append(engine)
        return engine

    yield build
    for engine in built:
        engine.close()


def failing_calls_folder(data: Path) -> Path:
    """A data folder with 20 calls of service `a` in project `default`, half of them failed."""
    store = open_store(data)
    migrate(store)
    insert_calls(store, time.time(), 20, errors=10, service="a", project="default")
    store.close()
    return data
