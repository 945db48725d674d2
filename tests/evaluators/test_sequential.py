"""The sequential comparison of two versions (mSPRT): looked at after every batch of calls, a
false "loses" stays under alpha, a real drop is caught, and the confidence sequence covers the
true difference at every look at once. Seeded simulations of judge scores (1 to 5)."""

from __future__ import annotations

import numpy as np

from driftline.evaluators.sequential import Pairs, Sample, compare, decide, win_rate

ALPHA, MIN_EFFECT, MAX_DROP = 0.05, 0.05, 0.05
LOOK_EVERY, MOST = 50, 6000
BASE_MEAN = 3.5


def scores(rng: np.random.Generator, mean: float, n: int) -> np.ndarray:
    """A judge's scores, averaged over criteria and calls: near normal around the mean."""
    return rng.normal(mean, 1.0, n)


def run(seed: int, drop: float) -> tuple[str | None, int, bool]:
    """Looks at a stream of calls split evenly between the versions until a verdict: (the
    verdict, calls per version by then, whether every look's bounds held the true difference)."""
    rng = np.random.default_rng(seed)
    a, b = scores(rng, BASE_MEAN, MOST), scores(rng, BASE_MEAN * (1 - drop), MOST)
    truth = -drop * BASE_MEAN
    covered = True
    for n in range(LOOK_EVERY, MOST + 1, LOOK_EVERY):
        found = compare(
            "accuracy",
            Sample(n, float(a[:n].mean()), float(a[:n].var(ddof=1))),
            Sample(n, float(b[:n].mean()), float(b[:n].var(ddof=1))),
            ALPHA,
            MIN_EFFECT,
        )
        assert found is not None
        covered &= found.low <= truth <= found.high
        verdict = decide([found], MAX_DROP)
        if verdict.outcome is not None:
            return verdict.outcome, n, covered
    return None, MOST, covered


def test_no_difference_rarely_loses_however_often_it_is_looked_at() -> None:
    outcomes = [run(seed, 0.0) for seed in range(200)]
    false_losses = sum(o == "loses" for o, _, _ in outcomes)
    assert false_losses / len(outcomes) <= ALPHA
    assert sum(o == "wins" for o, _, _ in outcomes) >= 0.9 * len(outcomes)


def test_a_candidate_ten_percent_worse_is_caught() -> None:
    outcomes = [run(1000 + seed, 0.10) for seed in range(100)]
    assert sum(o == "loses" for o, _, _ in outcomes) >= 95
    assert not any(o == "wins" for o, _, _ in outcomes)


def test_a_candidate_five_percent_worse_is_caught_and_rarely_wins() -> None:
    outcomes = [run(2000 + seed, 0.05) for seed in range(100)]
    assert sum(o == "loses" for o, _, _ in outcomes) >= 80
    assert sum(o == "wins" for o, _, _ in outcomes) <= ALPHA * len(outcomes)


def test_the_bounds_hold_the_true_difference_at_every_look() -> None:
    outcomes = [run(3000 + seed, drop) for seed in range(100) for drop in (0.0, 0.05)]
    assert sum(c for _, _, c in outcomes) >= (1 - ALPHA) * len(outcomes)


def test_nothing_is_decided_on_too_little() -> None:
    assert compare("x", Sample(1, 3.0, 0.0), Sample(50, 3.0, 1.0), ALPHA, MIN_EFFECT) is None
    fixed = compare("cost", Sample(9, 0.2, 0.0), Sample(9, 0.2, 0.0), ALPHA, MIN_EFFECT, "lower")
    assert fixed is not None and not fixed.worse and fixed.not_worse_than(0.0)
    dearer = compare("cost", Sample(9, 0.2, 0.0), Sample(9, 0.3, 0.0), ALPHA, MIN_EFFECT, "lower")
    assert dearer is not None and dearer.worse
    undecided = decide(
        [compare("x", Sample(5, 3.5, 1), Sample(5, 3.4, 1), ALPHA, MIN_EFFECT)], 0.05
    )
    assert undecided.outcome is None
    lower_is_better = compare(
        "latency_ms", Sample(5000, 400, 100**2), Sample(5000, 480, 100**2), ALPHA, MIN_EFFECT,
        better="lower",
    )  # fmt: skip
    assert lower_is_better is not None and lower_is_better.worse


def pairwise(seed: int, prefer: float, ties: float = 0.2) -> str | None:
    """People choose between the versions' answers, the candidate's with chance `prefer` of
    the choices that are not ties; the verdict once one comes, looked at every 20 pairs."""
    rng = np.random.default_rng(seed)
    draws = rng.random((2, 4000))
    tie, won = draws[0] < ties, draws[1] < prefer
    for n in range(20, 4001, 20):
        pairs = Pairs(int((won[:n] & ~tie[:n]).sum()), int((~won[:n] & ~tie[:n]).sum()),
                      int(tie[:n].sum()))  # fmt: skip
        verdict = decide([], MAX_DROP, win_rate(pairs, ALPHA, 0.6), 0.6, judged_pairwise=True)
        if verdict.outcome is not None:
            return verdict.outcome
    return None


def test_the_win_rate_rarely_wins_for_a_candidate_no_better_and_wins_for_a_better_one() -> None:
    even = [pairwise(3000 + seed, 0.5) for seed in range(200)]
    assert sum(o == "wins" for o in even) <= ALPHA * len(even)
    assert sum(o == "loses" for o in even) >= 0.9 * len(even)  # shown short of the bar
    better = [pairwise(4000 + seed, 0.75) for seed in range(100)]  # a win rate of 70%
    assert sum(o == "wins" for o in better) >= 90


def test_a_win_rate_needs_pairs_and_the_bar() -> None:
    assert win_rate(Pairs(1, 0, 0), ALPHA, 0.6) is None
    rate = win_rate(Pairs(30, 10, 0), ALPHA, 0.6)
    assert rate is not None and rate.baseline_mean + rate.difference == 0.75
    # judged pairwise but too few pairs: no verdict, however good the other metrics
    same = compare("accuracy", Sample(50, 3.5, 0.0), Sample(50, 3.5, 0.0), ALPHA, MIN_EFFECT)
    assert decide([same], MAX_DROP).outcome == "wins"
    assert decide([same], MAX_DROP, None, 0.6, judged_pairwise=True).outcome is None
