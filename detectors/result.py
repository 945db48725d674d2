"""The outcome of one two-sample drift test on a reference and a current window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TwoSampleResult:
    """One test's answer: is the current window drawn from the reference's distribution?

    `statistic` is the test's own quantity (MMD², AUC, cosine distance, chi-square);
    `effect_size` is a scale-free size of the difference, documented per test;
    `details` holds JSON-serialisable extras (examples, clusters, bandwidths).
    """

    test: str
    statistic: float
    effect_size: float
    p_value: float
    n_reference: int
    n_current: int
    details: dict[str, Any] = field(default_factory=dict)
