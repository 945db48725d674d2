"""Live A/B of model versions: how many calls the sequential test (mSPRT, evaluators/
sequential.py) needs for a verdict, and how often it is wrong, when looked at after every batch.

Simulates `--runs` comparisons per effect: two versions' judge scores (normal, sd 1, the
baseline's mean 3.5; the candidate worse by the effect), the traffic split evenly, the test
looked at every `--look-every` calls per version up to `--most`. A verdict is `loses` (worse
beyond chance) or `wins` (shown worse by less than `max_drop`); with no effect, `loses` is the
false verdict, with an effect `wins` is.

Then the win rate where people chose between the versions' answers side by side: `--runs`
comparisons per true win rate (a fifth of the choices ties), looked at every `--look-every-pair`
pairs up to `--most-pairs`; `wins` needs the rate beyond an even 0.5 and at least
`--min-win-rate`, `loses` is the rate shown below it. With an even split, `wins` is the false
verdict.

    python bench/ab.py [--runs 1000] [--look-every 50] [--most 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from driftline.evaluators.sequential import Pairs, Sample, compare, decide, win_rate  # noqa: E402

BASE_MEAN, SD = 3.5, 1.0
EFFECTS = (0.0, 0.05, 0.10)
WIN_RATES, TIES = (0.5, 0.6, 0.65, 0.7), 0.2


def one(rng: np.random.Generator, effect: float, args: argparse.Namespace) -> tuple[str, int]:
    """A comparison run to its verdict: (`wins`, `loses` or `none`, calls per version)."""
    a = rng.normal(BASE_MEAN, SD, args.most)
    b = rng.normal(BASE_MEAN * (1 - effect), SD, args.most)
    ca, cb = np.cumsum(a), np.cumsum(b)
    qa, qb = np.cumsum(a * a), np.cumsum(b * b)
    for n in range(args.look_every, args.most + 1, args.look_every):
        samples = []
        for c, q in ((ca, qa), (cb, qb)):
            mean = c[n - 1] / n
            samples.append(Sample(n, mean, (q[n - 1] - n * mean * mean) / (n - 1)))
        found = compare("score", samples[0], samples[1], args.alpha, args.min_effect)
        verdict = decide([found], args.max_drop).outcome
        if verdict is not None:
            return verdict, n
    return "none", args.most


def one_pairwise(
    rng: np.random.Generator, rate: float, args: argparse.Namespace
) -> tuple[str, int]:
    """Choices between the versions' answers, judged to a verdict: (verdict, pairs by then)."""
    tie = rng.random(args.most_pairs) < TIES
    won = rng.random(args.most_pairs) < (rate - TIES / 2) / (1 - TIES)  # the true rate: `rate`
    wins, ties = np.cumsum(won & ~tie), np.cumsum(tie)
    for n in range(args.look_every_pair, args.most_pairs + 1, args.look_every_pair):
        pairs = Pairs(int(wins[n - 1]), n - int(wins[n - 1]) - int(ties[n - 1]), int(ties[n - 1]))
        found = win_rate(pairs, args.alpha, args.min_win_rate)
        verdict = decide([], args.max_drop, found, args.min_win_rate, judged_pairwise=True)
        if verdict.outcome is not None:
            return verdict.outcome, n
    return "none", args.most_pairs


def _tally(runs: list[tuple[str, int]], wrong: str) -> list[float | None]:
    """Shares of `loses`, `wins`, no verdict and the wrong verdict; median and 90th percentile
    of the calls (or pairs) to a verdict."""
    decided = [n for verdict, n in runs if verdict != "none"]
    share = {v: sum(r == v for r, _ in runs) / len(runs) for v in ("wins", "loses", "none")}
    return [share["loses"], share["wins"], share["none"], share[wrong],
            statistics.median(decided) if decided else None,
            float(np.percentile(decided, 90)) if decided else None]  # fmt: skip


VERDICT_COLUMNS = ("loses", "wins", "no verdict", "**false verdicts**")


def _rows(
    values: Sequence[float],
    seed: int,
    simulate: Callable[[np.random.Generator, float], tuple[str, int]],
    wrong: Callable[[float], str],
    runs: int,
) -> list[list[float | None]]:
    """For each true value, `runs` simulated comparisons tallied (`wrong`: its false verdict)."""
    rows = []
    for k, value in enumerate(values):
        rng = np.random.default_rng(seed + k)
        rows.append([value, *_tally([simulate(rng, value) for _ in range(runs)], wrong(value))])
        print(value, rows[-1], flush=True)
    return rows


def _verdict_table(
    title: str, axis: dict[str, str], counted: str, rows: list[list[float | None]]
) -> dict[str, Any]:
    """The tallies of `_rows` by true value (`axis`), with `counted` to a verdict."""
    return record.table(
        title,
        [axis, *(record.col(name, "", ".1%") for name in VERDICT_COLUMNS),
         record.col(f"{counted} to a verdict, median", "", ",.0f"),
         record.col("90th percentile", "", ",.0f")],
        rows,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--look-every", type=int, default=50)
    parser.add_argument("--most", type=int, default=20_000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-effect", type=float, default=0.05)
    parser.add_argument("--max-drop", type=float, default=0.05)
    parser.add_argument("--look-every-pair", type=int, default=20)
    parser.add_argument("--most-pairs", type=int, default=5000)
    parser.add_argument("--min-win-rate", type=float, default=0.6)
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("ab", args.record, ["numpy"])
    rows = _rows(EFFECTS, 0, lambda rng, effect: one(rng, effect, args),
                 lambda effect: "loses" if effect == 0 else "wins", args.runs)  # fmt: skip
    table = _verdict_table(
        f"{args.runs:,} comparisons per effect; judge scores with sd {SD:g} around "
        f"{BASE_MEAN:g}; looked at every {args.look_every} calls per version, up to "
        f"{args.most:,}",
        record.col("candidate worse by", "", ".0%"),
        "calls per version",
        rows,
    )
    pair_rows = _rows(WIN_RATES, 100, lambda rng, rate: one_pairwise(rng, rate, args),
                      lambda rate: "wins" if rate < args.min_win_rate else "loses",
                      args.runs)  # fmt: skip
    pairwise = _verdict_table(
        f"{args.runs:,} comparisons per true win rate, judged pairwise ({TIES:.0%} ties); "
        f"looked at every {args.look_every_pair} pairs, up to {args.most_pairs:,}; a winner "
        f"needs {args.min_win_rate:.0%}",
        record.col("candidate's true win rate", "", ".0%"),
        "pairs",
        pair_rows,
    )
    target = record.table(
        "Target",
        [record.col("target"), record.col("measured", fmt=".1%"), record.col("met")],
        [[f"false losses at most alpha = {args.alpha:g}", rows[0][4], rows[0][4] <= args.alpha],
         [f"false wins, judged pairwise, at most alpha = {args.alpha:g}", pair_rows[0][4],
          pair_rows[0][4] <= args.alpha]],
    )  # fmt: skip
    names = ("runs", "look_every", "most", "alpha", "min_effect", "max_drop", "look_every_pair",
             "most_pairs", "min_win_rate")  # fmt: skip
    settings = {name: getattr(args, name) for name in names}
    recorder.write([table, pairwise, target], settings)


if __name__ == "__main__":
    main()
