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
Where answers of both versions were judged side by side, the candidate's win rate is tested the
same way, as its difference from an even 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    return _sequence(metric, better, d, v, tau2, alpha, a.mean)


def _sequence(
    metric: str, better: Better, d: float, v: float, tau2: float, alpha: float, base: float
) -> Comparison:
    """The mSPRT's likelihood ratio and confidence sequence for a difference `d` of variance
    `v`, under the N(0, `tau2`) mixture."""
    ratio = math.sqrt(v / (v + tau2)) * math.exp(min(tau2 * d * d / (2 * v * (v + tau2)), 700.0))
    width = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return Comparison(metric, better, d, d - width, d + width, ratio, base)


@dataclass(frozen=True)
class Pairs:
    """Answers of the two versions to the same input set side by side and judged: how often
    the candidate's was preferred, the baseline's, or neither."""

    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties


def win_rate(pairs: Pairs, alpha: float, min_win_rate: float) -> Comparison | None:
    """The candidate's win rate (a tie counts half) as its difference from an even 0.5, with its
    confidence sequence; None before two pairs. The variance is a value in [0, 1]'s largest,
    1/4, so the sequence holds whatever the share of ties; the mixture is centred on the
    distance from 0.5 to `min_win_rate`, the effect the verdict asks for."""
    if pairs.n < 2:
        return None
    d = (pairs.wins + pairs.ties / 2) / pairs.n - 0.5
    tau2 = max(abs(min_win_rate - 0.5), 0.01) ** 2
    return _sequence("pairwise:win_rate", "higher", d, 0.25 / pairs.n, tau2, alpha, 0.5)


@dataclass(frozen=True)
class Verdict:
    """`loses`: a metric is worse beyond chance, or the win rate is shown below the bar;
    `wins`: every metric is shown worse by less than `max_drop` and, where answers were judged
    pairwise, the candidate is preferred beyond chance and at least `min_win_rate` of the
    time; None: not yet."""

    outcome: Literal["wins", "loses"] | None
    comparisons: list[Comparison]


def decide(
    comparisons: list[Comparison | None],
    max_drop: float,
    pairwise: Comparison | None = None,
    min_win_rate: float = 0.6,
    judged_pairwise: bool = False,
    guards: Sequence[Comparison | None] = (),
) -> Verdict:
    """The verdict over every metric (pass `alpha` divided by the number of metrics, the win
    rate and the guards among them, to `compare` and `win_rate`, so the chance of a false
    verdict stays at most `alpha` over all of them). `pairwise`: the win rate from `win_rate`,
    present when `judged_pairwise` (any pair judged). `guards`: metrics that make a candidate
    lose when worse beyond chance but need not be shown within `max_drop` to win (rates often
    near 0, of which a share of the baseline says little)."""
    known = [c for c in comparisons if c is not None]
    guarding = [c for c in guards if c is not None]
    shown = known + guarding + ([pairwise] if pairwise is not None else [])
    if any(c.worse for c in known + guarding) or (
        pairwise is not None and 0.5 + pairwise.high < min_win_rate
    ):
        return Verdict("loses", shown)
    metrics_pass = len(known) == len(comparisons) and all(c.not_worse_than(max_drop) for c in known)
    pairs_pass = not judged_pairwise or (
        pairwise is not None and pairwise.low > 0 and 0.5 + pairwise.difference >= min_win_rate
    )
    if (known or pairwise is not None) and metrics_pass and pairs_pass:
        return Verdict("wins", shown)
    return Verdict(None, shown)
