"""The `[detectors]` section of driftline's settings (TOML), also `DRIFTLINE_DETECTORS__<NAME>`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from driftline.detectors.references import MIN_CALLS

TestName = Literal["mmd", "classifier", "centroid", "topics"]
ALL_TESTS: tuple[TestName, ...] = ("mmd", "classifier", "centroid", "topics")


class DetectorSettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = Field(True, description="run detectors inside `driftline serve`")
    interval_seconds: float = Field(60.0, gt=0, description="pause between detector passes")
    embedder: Literal["static", "transformer"] = Field(
        "static",
        description="static: model2vec vectors distilled from the bundled MiniLM (CPU, fast); "
        "transformer: the sentence-transformers model itself",
    )
    model_path: str | None = Field(
        None, description="model folder (sentence-transformers or model2vec); default MiniLM"
    )
    model_cache: str | None = Field(
        None, description="where the distilled static model is kept; default ~/.cache/driftline"
    )
    device: str | None = Field(None, description="torch device; default CUDA when present")
    embed_batch: int = Field(512, ge=1, description="calls embedded per batch")
    embed_batches_per_pass: int = Field(
        20, ge=1, description="batches in a row before due tests run, so a backlog waits its turn"
    )
    embed_idle_seconds: float = Field(
        1.0,
        gt=0,
        description="pause when no call waits to be embedded (new calls are embedded "
        "continuously; the tests run every interval_seconds)",
    )
    embed_lookback_hours: float = Field(
        168.0,
        gt=0,
        description="a call that arrives later than this after it started is not "
        "embedded: the bound that keeps finding new calls independent of the history",
    )
    embed_settle_seconds: float = Field(
        5.0,
        ge=0,
        description="calls ingested more recently wait: an insert still in flight "
        "may show up with an earlier ingest time than calls already seen",
    )
    max_lag_seconds: float = Field(
        300.0,
        gt=0,
        description="when the oldest waiting call has waited longer, the next batch "
        "is a uniform sample of all waiting calls and the rest are skipped",
    )

    window_calls: int = Field(500, ge=0, description="calls per window; 0 to use window_seconds")
    window_seconds: int = Field(0, ge=0, description="window length in seconds (window_calls=0)")
    min_window_calls: int = Field(50, ge=10, description="a time window with fewer is skipped")
    tests: tuple[TestName, ...] = ALL_TESTS
    # Measured (bench/power.py): MMD alone was the best single test on 5 of 6 shifts and every
    # family with weaker tests in it lost power to it; the others stay as diagnostics.
    decide_on: tuple[TestName, ...] = Field(
        ("mmd",),
        description="the tests a window's decision is taken on (Westfall-Young min-p among them; "
        "the rest of `tests` are diagnostics); none of them in `tests`: all of `tests` decide",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="family-wise level across the tests (joint permutations, min-p)",
    )
    consecutive_windows: int = Field(
        2, ge=1, description="drifting windows in a row before the drift alerts"
    )
    permutations: int = Field(500, ge=19, le=10_000)
    max_samples: int = Field(
        20_000, ge=100, description="per side; larger windows and references are sampled"
    )
    topic_clusters: int = Field(8, ge=2, le=64)
    seed: int = 0

    # Calibrated by default: with MiniLM, 40% of genuine question/answer pairs of the Debian
    # corpus score below 0.7 (median 0.73), while off-topic pairs stay below 0.52.
    relevance: Literal["fixed", "calibrated"] = Field(
        "calibrated",
        description="a low quantile of the reference's relevance (fixed below 1/quantile calls)",
    )
    relevance_threshold: float = Field(0.7, ge=-1, le=1)
    relevance_quantile: float = Field(0.01, gt=0, lt=0.5)
    novelty_q: float = Field(0.1, gt=0, lt=1, description="Benjamini-Hochberg level per window")
    novelty_neighbours: int = Field(10, ge=1, le=100)
    z_threshold: float = Field(4.0, gt=0, description="robust z above which latency etc. flag")

    per_version_references: bool = Field(
        True, description="freeze a reference `{service}@{version}` for each new service.version"
    )
    version_reference_calls: int = Field(
        200,
        description="the first N calls of a version become its reference, once it has N",
    )
    max_version_references: int = Field(
        50, ge=1, description="per project: past this many, new versions get no reference"
    )

    review_daily_budget: int = Field(200, ge=0, description="flagged calls queued per day")
    audit_rate: float = Field(0.05, ge=0, le=1, description="share of unflagged calls queued")

    @field_validator("version_reference_calls")
    @classmethod
    def _enough_calls(cls, value: int) -> int:
        if not MIN_CALLS <= value <= 1_000_000:
            raise ValueError(
                f"version_reference_calls must be between {MIN_CALLS} (the fewest calls a "
                f"reference may hold) and 1000000, got {value}"
            )
        return value
