"""Live A/B of model versions: how many calls the sequential test (mSPRT, evaluators/
sequential.py) needs for a verdict, and how often it is wrong, when looked at after every batch.

Simulates `--runs` comparisons per effect: two versions' judge scores (normal, sd 1, the
baseline's mean 3.5; the candidate worse by the effect), the traffic split evenly, the test
looked at every `--look-every` calls per version up to `--most`. A verdict is `loses` (worse
beyond chance) or `wins` (shown worse by less than `max_drop`); with no effect, `loses` is the
false verdict, with an effect `wins` is.

    python bench/ab.py [--runs 1000] [--look-every 50] [--most 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from driftline.evaluators.sequential import Sample, compare, decide  # noqa: E402

BASE_MEAN, SD = 3.5, 1.0
EFFECTS = (0.0, 0.05, 0.10)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--look-every", type=int, default=50)
    parser.add_argument("--most", type=int, default=20_000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-effect", type=float, default=0.05)
    parser.add_argument("--max-drop", type=float, default=0.05)
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("ab", args.record, ["numpy"])
    rows = []
    for k, effect in enumerate(EFFECTS):
        rng = np.random.default_rng(k)
        runs = [one(rng, effect, args) for _ in range(args.runs)]
        decided = [n for verdict, n in runs if verdict != "none"]
        wrong = "loses" if effect == 0 else "wins"
        share = {v: sum(r == v for r, _ in runs) / len(runs) for v in ("wins", "loses", "none")}
        rows.append([effect, share["loses"], share["wins"], share["none"],
                     share[wrong], statistics.median(decided) if decided else None,
                     float(np.percentile(decided, 90)) if decided else None])  # fmt: skip
        print(effect, rows[-1], flush=True)
    table = record.table(
        f"{args.runs:,} comparisons per effect; judge scores with sd {SD:g} around "
        f"{BASE_MEAN:g}; looked at every {args.look_every} calls per version, up to "
        f"{args.most:,}",
        [record.col("candidate worse by", "", ".0%"), record.col("loses", "", ".1%"),
         record.col("wins", "", ".1%"), record.col("no verdict", "", ".1%"),
         record.col("**false verdicts**", "", ".1%"),
         record.col("calls per version to a verdict, median", "", ",.0f"),
         record.col("90th percentile", "", ",.0f")],
        rows,
    )  # fmt: skip
    target = record.table(
        "Target",
        [record.col("target"), record.col("measured", fmt=".1%"), record.col("met")],
        [[f"false losses at most alpha = {args.alpha:g}", rows[0][4], rows[0][4] <= args.alpha]],
    )
    names = ("runs", "look_every", "most", "alpha", "min_effect", "max_drop")
    settings = {name: getattr(args, name) for name in names}
    recorder.write([table, target], settings)


if __name__ == "__main__":
    main()
