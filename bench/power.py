"""Window decision power: each drift test alone, Holm over the four, and the joint min-p test.

Paired trials on real text: the fixture's 5,941 Debian package descriptions
(tests/fixtures/debian_descriptions.jsonl, the answers), embedded once with driftline's embedder
(`--embedder static|transformer`, through `make_embedder`; the transformer when the static one is
not available). Every trial draws a reference and a disjoint current window of n rows and runs,
on the same two windows, the four tests as the runner calls them (`mmd_test`, `classifier_test`,
`centroid_test`, `topic_test`; B permutations, seed = the trial number), Holm over their four
p-values (today's window decision), and `joint_test` over the four (Westfall-Young min-p on shared
relabellings). A window "drifts" when the decision rejects at alpha = 0.05.

Sub-families. From the SAME relabellings of that joint run (its per-relabelling statistics,
`joint_test(..., keep_statistics=True)`), the Westfall-Young step-down decision of each subset of
tests in `SUBSETS` ({mmd, classifier, centroid}, {mmd, classifier}, {mmd, centroid}, {mmd}) is
read off with `min_p_step_down`, no statistic recomputed. They are the decisions `joint_test`
would make with `tests=` that subset up to the draw of relabellings: it would use 5-fold
within-fold permutations only when the classifier is selected and plain permutations otherwise
(and {mmd} alone would run `mmd_test`); both kinds are exact, so only the Monte-Carlo draw
differs. {mmd} on the shared relabellings vs `mmd_test` on its own therefore shows the paired
noise floor: the same statistic, another B relabellings.

Conditions (both windows drawn without replacement, disjoint):

* no shift: both windows uniform from the whole fixture;
* topic +d points: the reference uniform; the current window holds exactly
  round(n · (s + d)) rows of the programming-language sections (golang, haskell, java, …,
  share s = 22% of the fixture; the group of bench/drift.py) and the rest from the others;
* 10% new topic: the reference uniform over the fixture without the `hamradio` and `electronics`
  sections; the current window 90% from the same rows and 10% from those two sections;
* style shift: both windows uniform from the fixture; in the current window a share
  (`--style-share`, default 0.15) of the answers is cut to its first sentence (the first
  paragraph up to the first ".", "!" or "?" followed by a space or its end; 98.8% of the
  descriptions are longer than that, and the cut ones keep 112 of 416 characters on average).

n = 500: no shift, topic +15, new topic, style; n = 1,000: no shift, topic +5, new topic, style
(`--n` changes both sizes).

    python bench/power.py [--embedder static|transformer] [--trials 30 15] [--record PATH]

The per-trial p-values go to bench/results/power_trials.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from bench.drift import FIXTURE, RESULTS, SHIFT_GROUP, device_name  # noqa: E402
from driftline.detectors.centroid import centroid_test  # noqa: E402
from driftline.detectors.classifier import classifier_test  # noqa: E402
from driftline.detectors.joint import TESTS, joint_test, min_p_step_down  # noqa: E402
from driftline.detectors.mmd import mmd_test  # noqa: E402
from driftline.detectors.multiple import holm  # noqa: E402
from driftline.detectors.topics import topic_test  # noqa: E402

ALPHA = 0.05
NEW_TOPIC = ("hamradio", "electronics")
STYLE_RECIPE = "first-sentence-v1"
SUBSETS = (("mmd", "classifier", "centroid"), ("mmd", "classifier"), ("mmd", "centroid"), ("mmd",))
FAMILIES = ("joint", *("joint:" + "+".join(s) for s in SUBSETS))  # Westfall-Young decisions
DECISIONS = (*TESTS, "holm", *FAMILIES)
SHORT = {"mmd": "mmd", "classifier": "cls", "centroid": "cen", "topics": "top"}


def label(decision: str) -> str:
    """Column name: the test, Holm (4), joint (4) or WY{mmd, cls, ...} for a subset."""
    if decision == "holm":
        return "Holm (4)"
    if decision == "joint":
        return "joint (4)"
    if decision.startswith("joint:"):
        return "WY{" + ", ".join(SHORT[t] for t in decision[6:].split("+")) + "}"
    return decision


def first_sentence(text: str) -> str:
    """The first paragraph up to its first sentence end (".", "!" or "?" then a space or end)."""
    paragraph = text.strip().split("\n\n")[0].strip()
    found = re.match(r"(.+?[.!?])(?=\s|$)", paragraph, re.S)
    return found.group(1) if found else paragraph


# ----------------------------------------------------------------------------- embeddings


def make_embedder(kind: str) -> tuple[Any, str]:
    """driftline's embedder of that kind, or the transformer where `make_embedder` is missing."""
    try:
        from driftline.detectors.config import DetectorSettings
        from driftline.detectors.embedder import make_embedder as make
    except ImportError:
        if kind != "transformer":
            print("no make_embedder in driftline.detectors.embedder: using the transformer")
        from driftline.detectors.embedder import Embedder

        return Embedder(), "transformer"
    return make(DetectorSettings(embedder=kind)), kind


def embed(kind: str) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """Answers and first-sentence answers, embedded once (cached in bench/results)."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    sections = [r["section"] for r in rows]
    embedder, kind = make_embedder(kind)
    digest = hashlib.sha256(FIXTURE.read_bytes() + STYLE_RECIPE.encode()).hexdigest()[:12]
    cache = RESULTS / f"power_{embedder.name}_{digest}.npz"
    meta: dict[str, Any] = {"embedder": kind, "model": embedder.name, "texts": len(rows)}
    if cache.exists():
        data = np.load(cache)
        return data["answers"], data["short"], sections, {**meta, "cached": True}
    answers = [r["description"] for r in rows]
    start = time.perf_counter()
    full = embedder.encode(answers)
    short = embedder.encode([first_sentence(t) for t in answers])
    meta["embed_s"] = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, answers=full, short=short)
    return full, short, sections, {**meta, "cached": False}


# ----------------------------------------------------------------------------- trials


Window = tuple[np.ndarray, np.ndarray]  # row numbers, and whether each row is cut (style)


def draw(
    condition: str, n: int, sections: np.ndarray, rng: np.random.Generator, style_share: float
) -> tuple[np.ndarray, Window]:
    """(reference rows, (current rows, cut flags)) for one trial of `condition`."""
    total = len(sections)
    plain = np.zeros(n, dtype=bool)
    if condition == "no shift":
        rows = rng.choice(total, 2 * n, replace=False)
        return rows[:n], (rows[n:], plain)
    if condition.startswith("topic"):
        points = int(condition.split("+")[1].split()[0])
        group = np.isin(sections, SHIFT_GROUP)
        ref = rng.choice(total, n, replace=False)
        k = round(n * (group.mean() + points / 100))
        left = np.setdiff1d(np.arange(total), ref)
        cur = np.concatenate(
            [
                rng.choice(left[group[left]], k, replace=False),
                rng.choice(left[~group[left]], n - k, replace=False),
            ]
        )
        return ref, (rng.permutation(cur), plain)
    if condition == "10% new topic":
        new = np.isin(sections, NEW_TOPIC)
        k = round(0.1 * n)
        rows = rng.choice(np.flatnonzero(~new), 2 * n - k, replace=False)
        cur = np.concatenate([rows[n:], rng.choice(np.flatnonzero(new), k, replace=False)])
        return rows[:n], (rng.permutation(cur), plain)
    if condition == "style":
        rows = rng.choice(total, 2 * n, replace=False)
        cut = np.zeros(n, dtype=bool)
        cut[rng.choice(n, round(style_share * n), replace=False)] = True
        return rows[:n], (rows[n:], cut)
    raise ValueError(f"unknown condition {condition!r}")


def decisions(
    x: np.ndarray, y: np.ndarray, permutations: int, seed: int
) -> tuple[dict[str, bool], dict[str, float]]:
    """Each single test, Holm over the four, the joint test and its subsets on one pair of
    windows. The p of a Westfall-Young decision is its smallest adjusted p."""
    singles: dict[str, Callable[[], Any]] = {
        "mmd": lambda: mmd_test(x, y, permutations=permutations, seed=seed),
        "classifier": lambda: classifier_test(x, y, permutations=permutations, seed=seed),
        "centroid": lambda: centroid_test(x, y, permutations=permutations, seed=seed),
        "topics": lambda: topic_test(x, y, seed=seed),
    }
    p = {name: float(run().p_value) for name, run in singles.items()}
    out = {name: p[name] <= ALPHA for name in TESTS}
    out["holm"] = any(holm([p[name] for name in TESTS], ALPHA))
    joint = joint_test(
        x, y, tests=TESTS, alpha=ALPHA, permutations=permutations, seed=seed, keep_statistics=True
    )
    out["joint"] = joint.drifting
    p["joint"] = min(joint.adjusted)
    matrix = joint.details["statistics"]
    # the same step-down on the same relabellings gives back the joint decision
    assert min_p_step_down(matrix)[1].tolist() == joint.adjusted
    for subset, family in zip(SUBSETS, FAMILIES[1:], strict=True):
        _, adjusted = min_p_step_down(matrix[[TESTS.index(t) for t in subset]])
        p[family] = float(adjusted.min())
        out[family] = p[family] <= ALPHA
    return out, p


def run(args: argparse.Namespace) -> dict[str, Any]:
    full, short, section_list, meta = embed(args.embedder)
    sections = np.array(section_list)
    small, large = args.n
    plan = [
        (small, ["no shift", "topic +15 points", "10% new topic", "style"], args.trials[0]),
        (large, ["no shift", "topic +5 points", "10% new topic", "style"], args.trials[1]),
    ]
    rows = []
    for size_index, (n, conditions, trials) in enumerate(plan):
        for c, condition in enumerate(conditions):
            rng = np.random.default_rng([args.seed, size_index, c])
            hits = {name: 0 for name in DECISIONS}
            only = {"joint": 0, "best": 0}  # paired: rejected by one decision and not the other
            per_trial, p_values = [], []
            start = time.perf_counter()
            for trial in range(trials):
                ref, (cur, cut) = draw(condition, n, sections, rng, args.style_share)
                y = np.where(cut[:, None], short[cur], full[cur])
                out, p = decisions(full[ref], y, args.permutations, seed=trial)
                per_trial.append(out)
                p_values.append({k: round(v, 6) for k, v in p.items()})
                for name in DECISIONS:
                    hits[name] += out[name]
            rates = {name: hits[name] / trials for name in DECISIONS}
            best = max(TESTS, key=lambda t: rates[t])
            for out in per_trial:
                only["joint"] += out["joint"] and not out[best]
                only["best"] += out[best] and not out["joint"]
            # every decision against the best single test, paired: (it only, best only)
            paired = {
                name: [
                    sum(o[name] and not o[best] for o in per_trial),
                    sum(o[best] and not o[name] for o in per_trial),
                ]
                for name in DECISIONS
            }
            row = {
                "n": n,
                "condition": condition,
                "trials": trials,
                "rates": rates,
                "best_single": best,
                "joint_only": only["joint"],
                "best_only": only["best"],
                "paired": paired,
                "seconds": time.perf_counter() - start,
                "p_values": p_values,
            }
            rows.append(row)
            print(
                f"n={n} {condition}: "
                + ", ".join(f"{label(k)} {v:.2f}" for k, v in rates.items())
                + f" ({row['seconds']:.0f} s)",
                flush=True,
            )
    return {"embedding": meta, "rows": rows}


# ----------------------------------------------------------------------------- report


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    null = [r for r in rows if r["condition"] == "no shift"]
    alarms = sum(r["rates"]["joint"] * r["trials"] for r in null)
    null_trials = sum(r["trials"] for r in null)
    shifts = [r for r in rows if r["condition"] != "no shift"]
    return {
        "joint_false_alarms": alarms / null_trials,
        "false_alarms_met": all(r["rates"]["joint"] <= ALPHA + 0.02 for r in null),
        "power_met": all(r["rates"]["joint"] >= r["rates"][r["best_single"]] for r in shifts),
        "decisions": {name: decision_summary(rows, name) for name in DECISIONS},
    }


def decision_summary(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One decision over all rows: its false alarms, and its power against the best single test
    of each shifted row (rates, and the paired trials pooled over the shifts with McNemar's exact
    p: two-sided binomial on the discordant pairs)."""
    null = [r for r in rows if r["condition"] == "no shift"]
    shifts = [r for r in rows if r["condition"] != "no shift"]
    gaps = [r["rates"][name] - r["rates"][r["best_single"]] for r in shifts]
    it_only = sum(r["paired"][name][0] for r in shifts)
    best_only = sum(r["paired"][name][1] for r in shifts)
    discordant = it_only + best_only
    # against {mmd} on the same relabellings: the price of the other tests, free of the draw
    same = [0, 0]
    if name in FAMILIES:
        for r in shifts:
            for p in r["p_values"]:
                same[0] += p[name] <= ALPHA < p["joint:mmd"]
                same[1] += p["joint:mmd"] <= ALPHA < p[name]
    return {
        "false_alarms": sum(r["rates"][name] * r["trials"] for r in null)
        / max(1, sum(r["trials"] for r in null)),
        "false_alarms_met": all(r["rates"][name] <= ALPHA + 0.02 for r in null),
        "shifts_met": sum(g >= 0 for g in gaps),
        "shifts": len(shifts),
        "worst_gap": min(gaps, default=0.0),
        "total_gap": sum(gaps),
        "mean_power": float(np.mean([r["rates"][name] for r in shifts])) if shifts else 0.0,
        "only": it_only,
        "best_only": best_only,
        "mcnemar_p": binomtest(it_only, discordant, 0.5).pvalue if discordant else 1.0,
        "vs_mmd_relabelled": same if name in FAMILIES else None,
    }


def tables(result: dict[str, Any], v: dict[str, Any]) -> list[dict[str, Any]]:
    """The rates by row, the Westfall-Young subsets by row, every decision summed up, targets."""

    def rate(name: str) -> dict[str, str]:
        return record.col(label(name), fmt=".2f")

    rows = result["rows"]
    main = []
    for r in rows:
        rates = r["rates"]
        if r["condition"] == "no shift":
            ok = "false alarms ≤ 0.07: " + ("yes" if rates["joint"] <= ALPHA + 0.02 else "no")
        else:
            ok = "yes" if rates["joint"] >= rates[r["best_single"]] else "no"
        main.append(
            [r["n"], r["condition"], r["trials"], *(rates[t] for t in TESTS), rates["holm"],
             rates["joint"], f"{r['joint_only']} / {r['best_only']}", ok]
        )  # fmt: skip
    families = [
        [r["n"], r["condition"], r["trials"], r["best_single"], r["rates"][r["best_single"]],
         *(f"{r['rates'][f]:.2f} ({r['paired'][f][0]}/{r['paired'][f][1]})" for f in FAMILIES)]
        for r in rows
    ]  # fmt: skip
    summary = []
    for name in DECISIONS:
        d = v["decisions"][name]
        pair = d["vs_mmd_relabelled"]
        same = "—" if pair is None or name == "joint:mmd" else f"{pair[0]} / {pair[1]}"
        summary.append(
            [label(name), d["false_alarms"], d["false_alarms_met"],
             f"{d['shifts_met']} / {d['shifts']}", d["worst_gap"], d["total_gap"],
             d["mean_power"], f"{d['only']} / {d['best_only']}", d["mcnemar_p"], same]
        )  # fmt: skip
    window = [record.col("n", fmt=",d"), record.col("current window"), record.col("trials")]
    return [
        record.table(
            "Rejection rate; *paired*: trials where the joint test rejects and the best single "
            "test does not / the reverse",
            [*window, *(rate(t) for t in TESTS), rate("holm"), rate("joint"),
             record.col("paired"), record.col("joint ≥ best single")],
            main,
        ),
        record.table(
            "Westfall-Young step-down min-p over subsets of the tests, read off the joint test's "
            "relabellings of the same trials (no statistic recomputed): the rejection rate and, "
            "in brackets, the paired trials where that decision rejects and the row's best single "
            "test does not / the reverse",
            [*window, record.col("best single"), record.col("its rate", fmt=".2f"),
             *(record.col(label(f)) for f in FAMILIES)],
            families,
        ),
        record.table(
            "Every decision against the best single test of each shifted row (picked after the "
            "fact, which favours it): false alarms pooled over the no-shift rows, shifted rows "
            "where it reaches the best single test's rate, the worst and the summed rate gap, its "
            "mean power over the shifts, the paired trials pooled over the shifts (it only / best "
            "single only) with McNemar's exact p, and for the Westfall-Young decisions the paired "
            "shifted trials against WY{mmd} on the same relabellings (it only / WY{mmd} only)",
            [record.col("decision"), record.col("false alarms", fmt=".3f"),
             record.col(f"≤ {ALPHA + 0.02:.2f} in each no-shift row"),
             record.col("shifts ≥ best"), record.col("worst gap", fmt="+.2f"),
             record.col("summed gap", fmt="+.2f"), record.col("mean power", fmt=".3f"),
             record.col("paired"), record.col("McNemar p", fmt=".2f"),
             record.col("vs WY{mmd}")],
            summary,
        ),
        record.table(
            "Targets (the joint test over the four)",
            [record.col("target"), record.col("met")],
            [[f"false alarms ≤ alpha + 0.02 in each no-shift row (pooled: "
              f"{v['joint_false_alarms']:.3f})", v["false_alarms_met"]],
             ["power ≥ the best single test's on every shift", v["power_met"]]],
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", choices=("static", "transformer"), default="static")
    parser.add_argument(
        "--trials",
        type=int,
        nargs=2,
        default=[30, 15],
        metavar=("SMALL", "LARGE"),
        help="trials per condition at the smaller and at the larger n",
    )
    parser.add_argument(
        "--n", type=int, nargs=2, default=[500, 1000], metavar=("SMALL", "LARGE"),
        help="the two window sizes",
    )  # fmt: skip
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--style-share", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("power", args.record, ["torch", "scikit-learn", "scipy"])
    result = run(args)
    verdict = verdicts(result["rows"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "power_trials.json").write_text(json.dumps({**result, **verdict}))
    meta = result["embedding"]
    settings = {
        "embedder": meta["embedder"],
        "model": meta["model"],
        "texts": meta["texts"],
        "alpha": ALPHA,
        "permutations": args.permutations,
        "style_share": args.style_share,
        "trials": args.trials,
        "n": args.n,
        "seed": args.seed,
        "device": device_name(),
    }
    recorder.write(tables(result, verdict), settings)


if __name__ == "__main__":
    main()
