"""The eval gate's arithmetic: a win rate with its Wilson interval, whether an LLM judge agrees
with people enough to be trusted, and the verdict: promote only a candidate that wins often
enough and lets no rubric criterion fall too far."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scipy.stats import spearmanr


@dataclass(frozen=True)
class WinRate:
    """Candidate wins over the baseline among `n` comparisons (a tie counts half)."""

    wins: float
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.wins / self.n if self.n else 0.0


def win_rate(wins: int, ties: int, losses: int, z: float = 1.96) -> WinRate:
    """The win rate with ties as half a win, and its Wilson score interval at `z`."""
    n = wins + ties + losses
    won = wins + ties / 2
    if n == 0:
        return WinRate(0.0, 0, 0.0, 1.0)
    p = won / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return WinRate(won, n, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class JudgeCheck:
    """How well an LLM judge's scores rank items as people did: the snapshot's held-out items,
    or (an online evaluator) the calls people audited, where the lowest criterion counts."""

    spearman: float | None  # None: undefined (too few items, or scores all alike)
    items: int
    trusted: bool
    source: Literal["held-out scores", "online audit"] = "held-out scores"


def check_judge(
    judge_scores: Sequence[float], human_scores: Sequence[float], threshold: float = 0.8
) -> JudgeCheck:
    """Trusted only if Spearman's rho with the human scores is above `threshold`."""
    if len(judge_scores) != len(human_scores):
        raise ValueError(f"{len(judge_scores)} judge scores for {len(human_scores)} human scores")
    if len(judge_scores) < 3 or len(set(judge_scores)) < 2 or len(set(human_scores)) < 2:
        return JudgeCheck(None, len(judge_scores), False)
    rho = float(spearmanr(judge_scores, human_scores).statistic)
    if not math.isfinite(rho):
        return JudgeCheck(None, len(judge_scores), False)
    return JudgeCheck(rho, len(judge_scores), rho > threshold)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def verdict(
    wins: WinRate,
    criteria_before: Mapping[str, float],
    criteria_after: Mapping[str, float],
    min_win_rate: float = 0.6,
    max_drop: float = 0.05,
) -> Verdict:
    """Promote if the win rate reaches `min_win_rate` and no criterion's mean score falls by
    more than `max_drop` (relative to the baseline); the reasons say what decided it."""
    reasons = []
    if wins.n == 0:
        reasons.append("no held-out comparisons")
    elif wins.rate < min_win_rate:
        reasons.append(
            f"win rate {wins.rate:.1%} (95% CI {wins.low:.1%}-{wins.high:.1%}) is below "
            f"{min_win_rate:.0%}"
        )
    for name, before in sorted(criteria_before.items()):
        after = criteria_after.get(name)
        if after is None:
            reasons.append(f"{name}: not measured for the candidate")
        elif before > 0 and (before - after) / before > max_drop:
            reasons.append(
                f"{name} falls {(before - after) / before:.1%} ({before:.2f} to {after:.2f}), "
                f"more than {max_drop:.0%}"
            )
    return Verdict(not reasons, reasons)
