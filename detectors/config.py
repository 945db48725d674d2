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
    model_path: str | None = Field(None, description="sentence-transformers folder; default MiniLM")
    device: str | None = Field(None, description="torch device; default CUDA when present")
    embed_batch: int = Field(512, ge=1, description="calls embedded per batch")
    embed_batches_per_pass: int = Field(
        20, ge=1, description="batches per pass, so a large backlog does not hold up the tests"
    )

    window_calls: int = Field(500, ge=0, description="calls per window; 0 to use window_seconds")
    window_seconds: int = Field(0, ge=0, description="window length in seconds (window_calls=0)")
    min_window_calls: int = Field(50, ge=10, description="a time window with fewer is skipped")
    tests: tuple[TestName, ...] = ALL_TESTS
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise level, Holm across tests")
    consecutive_windows: int = Field(
        2, ge=1, description="drifting windows in a row before the drift alerts"
    )
    permutations: int = Field(500, ge=19, le=10_000)
    max_samples: int = Field(20_000, ge=100, description="per side; larger windows are sampled")
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
