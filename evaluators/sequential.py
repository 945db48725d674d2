"""A sequential comparison of two model versions that stays valid however often it is looked
at: the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always
valid inference", 2017) on the difference of two means, with its confidence sequence.

Per metric, with `n` calls of each version seen so far, means m_A, m_B, variances s_A², s_B²:
the difference d = m_B - m_A has variance V = s_A²/n_A + s_B²/n_B, and under a normal mixture
N(0, τ²) over the true difference the likelihood ratio against "no difference" is

    Λ = sqrt(V / (V + τ²)) · exp(τ² d² / (2 V (V + τ²)))

"No difference" is rejected once Λ ≥ 1/alpha, and the set of differences not rejected, d ± w with
w² = V (V + τ²) / τ² · (2 log(1/alpha) + log((V + τ²) / V)), covers the true difference at every
look at once with probability 1 - alpha. τ is the smallest effect worth finding (`min_effect` of the
baseline's mean, or of the values' spread when that is larger), where the test is most powerful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Sample:
    """What is known of one version on one metric: calls, mean and variance of the values."""

    n: int
    mean: float
    variance: float


@dataclass(frozen=True)
class Comparison:
    """The candidate (B) against the baseline (A) on one metric, relative to A's mean."""

    metric: str
    better: Better
    difference: float  # m_B - m_A
    low: float  # the confidence sequence's bounds on the true difference
    high: float
    likelihood_ratio: float
    baseline_mean: float

    def relative(self, value: float) -> float:
        """`value` as a share of the baseline's mean (a rate of 0: any difference is infinite)."""
        if self.baseline_mean:
            return value / abs(self.baseline_mean)
        return math.copysign(math.inf, value) if value else 0.0

    @property
    def worse(self) -> bool:
        """The candidate is worse, beyond chance (at every look at once)."""
        return self.high < 0 if self.better == "higher" else self.low > 0

    def not_worse_than(self, max_drop: float) -> bool:
        """The candidate is worse by at most `max_drop` of the baseline's mean, beyond chance."""
        bound = self.low if self.better == "higher" else -self.high
        return self.relative(bound) >= -max_drop


def compare(
    metric: str, a: Sample, b: Sample, alpha: float, min_effect: float, better: Better = "higher"
) -> Comparison | None:
    """B against A on a metric; None until each side has two calls."""
    if a.n < 2 or b.n < 2:
        return None
    v = a.variance / a.n + b.variance / b.n
    # the effect's scale: of the baseline's mean, or of the spread where the mean is near 0
    # (an error rate of 0)
    tau2 = (min_effect * max(abs(a.mean), math.sqrt((a.variance + b.variance) / 2))) ** 2
    d = b.mean - a.mean
    if v <= 0:  # every value the same on both sides (a fixed price): the difference is known
        return Comparison(metric, better, d, d, d, math.inf if d else 1.0, a.mean)
    if tau2 <= 0:
        return None
    ratio = math.sqrt(v / (v + tau2)) * math.exp(min(tau2 * d * d / (2 * v * (v + tau2)), 700.0))
    width = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return Comparison(metric, better, d, d - width, d + width, ratio, a.mean)


@dataclass(frozen=True)
class Verdict:
    """`loses`: a metric is worse beyond chance; `wins`: every metric is shown worse by less
    than `max_drop`; None: not yet."""

    outcome: Literal["wins", "loses"] | None
    comparisons: list[Comparison]


def decide(comparisons: list[Comparison | None], max_drop: float) -> Verdict:
    """The verdict over every metric (pass `alpha` divided by the number of metrics to
    `compare`, so the chance of a false `loses` stays at most `alpha` over all of them)."""
    known = [c for c in comparisons if c is not None]
    if any(c.worse for c in known):
        return Verdict("loses", known)
    if known and len(known) == len(comparisons) and all(c.not_worse_than(max_drop) for c in known):
        return Verdict("wins", known)
    return Verdict(None, known)
