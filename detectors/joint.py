"""Joint permutation test of a window: every drift test on the same relabellings, Westfall-Young
min-p across them.

Why. A window runs up to four tests (mmd, classifier, centroid, topics), and it drifts when any
of them rejects at the family-wise level alpha. Holm on the tests' separate p-values has to
assume the worst about how they depend on each other, so its first step is Bonferroni's: the
smallest p must reach alpha / 4. But the four tests look at the same shift in the same rows and
mostly agree; on held-out real text (n = 500) Holm over the four lost power against MMD alone
(a +15-point topic shift caught 0.80 vs 1.00). Westfall and Young's min-p procedure measures the
dependence instead of bounding it: every test is scored on the same relabellings of the pooled
rows, so each relabelling gives a vector of statistics, and the null distribution of the
smallest p-value is read off those vectors. With tests that always agree it costs nothing
(adjusted = marginal p); with independent ones it is Šidák's correction; and it is never more
conservative than Bonferroni-Holm on the same permutation p-values (#{b: min_j p_jb ≤ p} ≤
Σ_j #{b: p_jb ≤ p}).

The relabellings. The rows of both windows are pooled into F folds, stratified: the reference
rows, shuffled, are dealt round-robin over the folds, and so are the current rows, so fold f
holds fixed numbers (r_f, c_f) of each; each fold is a block of positions in which its rows sit
in a random order. A relabelling permutes the window labels within every fold independently and
uniformly; B of them are drawn at random and the observed labelling is column 0. F is the
classifier's 5 folds when it is among the tests (its cross-fitted scores need fixed folds, and a
within-fold permutation keeps each fold's class counts), else 1 (plain permutations). Each test
scores every relabelling with the machinery it already has:

* mmd: unbiased MMD² of every relabelling from one pass over the kernel (`indicator_mmd2`);
  the bandwidths come from the median distance of the pooled rows, which ignores labels;
* classifier: AUC of the cross-fitted ridge scores, which are linear in the labels (one matrix
  product per fold for all relabellings);
* centroid: cosine distance between the two means (one matrix product);
* topics: k-means is fitted once on the pooled rows, which it sees without labels, and the small
  clusters are merged from the cluster sizes alone; each relabelling's chi-square is a
  bincount of its cluster labels. Its marginal p-value is a permutation p-value here, not the
  chi-square distribution's (kept in details["chi2_p_value"]).

Each test's marginal p is (1 + #{b ≥ 1: T_b ≥ T_0}) / (B + 1). The step-down (Westfall & Young
1993, algorithm 2.8): with p_jb the p-value relabelling b would get for test j among all B + 1
(ties counted as exceedances) and the tests ordered by marginal p ascending, step i adjusts the
i-th test by the share of relabellings whose smallest p over the tests not yet passed is at most
its p; adjusted p-values are made non-decreasing along the order. A test rejects when its
adjusted p ≤ alpha; the window drifts when any does, i.e. when the first step rejects.

Exactness. Under no drift the rows of both windows are i.i.d. Pooling puts rows into positions
by seeded shuffles that never look at the values, so the pooled data Z (the row in each
position) is independent of the labelling L (which positions hold current rows), and L is
uniform over the labellings with the fold counts (r_f, c_f). The within-fold permutations form
a group G that acts transitively on those labellings, so for g_1, …, g_B drawn independently and
uniformly from G, (L, g_1 L, …, g_B L) is exchangeable given Z (Hemerik & Goeman 2018, "Exact
testing with random permutations"). Every statistic above is a function of Z and of the
labelling it scores — the bandwidths, the clusters, their merging and the folds depend on Z and
the fold layout only — so the B + 1 statistic vectors are exchangeable, and any rank of the
observed vector among them is uniform up to ties. Hence each marginal p and the min-p of the
first step are valid: P(drifting) ≤ alpha under no drift, for every sample size and any
dependence between the tests. The tests' hypotheses are all the one that a permutation test
certifies (both windows come from one distribution), so once it is false no rejection is a
false one, and the family-wise error is controlled in the strong sense too. When a window is
larger than `max_samples`, a seeded random subset of that many rows is tested for every test
(not only for MMD, as `mmd_test` alone does), which keeps the rows i.i.d. under no drift.

With a single test selected, `joint_test` runs that test's own function (as the runner does):
same p-value, adjusted = marginal.

Sub-families. With `keep_statistics=True` (two or more tests), `details["statistics"]` holds the
(J, B + 1) matrix of every test's statistic on every relabelling (numpy, float64; column 0 the
observed labelling). `min_p_step_down(statistics[rows])` then gives the Westfall-Young decision
of any subset of the tests on the same relabellings, with no statistic recomputed (bench/power.py
compares them). Such a subset decision is an exact test too: the relabellings are the same
exchangeable draws, whichever rows are read. Off by default, so that `details` stays plain JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import chi2 as chi2_distribution

from .centroid import centroid_distances, centroid_result, centroid_test
from .classifier import (
    EXAMPLES as CLASSIFIER_EXAMPLES,
)
from .classifier import (
    FOLDS,
    RIDGE,
    _auc,
    _fold_projections,
    _out_of_fold,
    classifier_result,
    classifier_test,
    fold_relabellings,
    relabelling_chunk,
)
from .mmd import BANDWIDTH_SCALES, indicator_mmd2, median_distance, mmd_result, mmd_test
from .result import TwoSampleResult
from .tensors import ArrayLike, check_windows, pick_device
from .topics import (
    EXAMPLES as TOPIC_EXAMPLES,
)
from .topics import (
    check_topic_windows,
    fit_topics,
    split_chi_square,
    tested_bins,
    topic_result,
    topic_test,
)

__all__ = ["TESTS", "JointResult", "joint_test", "min_p_step_down"]

TESTS = ("mmd", "classifier", "centroid", "topics")


@dataclass(frozen=True)
class JointResult:
    """The window's decision from its tests, in the order they were asked for.

    `results` holds each test's own answer (its marginal permutation p-value, statistic, effect
    size and details); `adjusted` the Westfall-Young step-down min-p adjusted p-values;
    `rejected` whether each adjusted p ≤ alpha; `drifting` whether any test rejected.
    """

    results: list[TwoSampleResult]
    adjusted: list[float]
    rejected: list[bool]
    drifting: bool
    details: dict[str, Any] = field(default_factory=dict)


def joint_test(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    tests: Sequence[str] = TESTS,
    alpha: float = 0.05,
    permutations: int = 500,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_samples: int | None = 20_000,
    topic_clusters: int = 8,
    reference_texts: Sequence[str] | None = None,
    current_texts: Sequence[str] | None = None,
    keep_statistics: bool = False,
    decide_on: Sequence[str] | None = None,
) -> JointResult:
    """Test whether `current` comes from the distribution of `reference` with all of `tests` at
    once, controlling the family-wise error at `alpha` (see the module docstring).

    `decide_on` (a subset of `tests`; default all of them) is the family the decision is taken
    on: the other tests are diagnostics, scored on the same relabellings and reported with their
    own p-values, never rejected, so they cost the decision no power.

    The smallest possible p (marginal or adjusted) is 1 / (permutations + 1). Each side is
    subsampled (seeded) to `max_samples` rows when larger (None: never). `topic_clusters` and the
    texts go to the topics test. Runs on CUDA when torch sees it, unless `device` says otherwise
    (the k-means of the topics test runs on the CPU). `keep_statistics` adds the per-relabelling
    statistics matrix to `details["statistics"]` when two or more tests run (module docstring).
    """
    names = _check_arguments(tests, alpha, permutations, max_samples, topic_clusters)
    family = list(names) if decide_on is None else [t for t in names if t in decide_on]
    if decide_on is not None and (not family or set(decide_on) - set(names)):
        raise ValueError(
            f"decide_on ({', '.join(decide_on)}) must name tests that run ({', '.join(names)})"
        )
    if len(names) == 1:
        return _single(
            names[0], reference, current, alpha=alpha, permutations=permutations, seed=seed,
            device=device, max_samples=max_samples, topic_clusters=topic_clusters,
            reference_texts=reference_texts, current_texts=current_texts,
        )  # fmt: skip

    dev = pick_device(device)
    folds = FOLDS if "classifier" in names else 1
    min_rows, needs = (folds, "classifier") if folds > 1 else (2, names[0])
    x, y = check_windows(reference, current, min_rows=min_rows, device=dev, test=needs)
    n_total, m_total = x.shape[0], y.shape[0]
    for name, texts, size in (
        ("reference", reference_texts, n_total),
        ("current", current_texts, m_total),
    ):
        if texts is not None and len(texts) != size:
            raise ValueError(f"{name}_texts has {len(texts)} entries for {size} rows")
    if max_samples is not None and max_samples < min_rows:
        raise ValueError(f"max_samples must be at least {min_rows} for the {needs} test")

    gen = torch.Generator().manual_seed(seed)
    keep_x = _subsample(n_total, max_samples, gen)
    keep_y = _subsample(m_total, max_samples, gen)
    if keep_x is not None:
        x = x[keep_x.to(dev)]
    if keep_y is not None:
        y = y[keep_y.to(dev)]
    n, m = x.shape[0], y.shape[0]
    if "topics" in names:
        check_topic_windows(n, m, None, None)
    big_n, count = n + m, permutations + 1

    row_of, labels, fold_rows = _pool(n, m, folds, gen)
    z = torch.cat([x, y])[row_of.to(dev)]
    labels_d = labels.to(dev)
    fold_rows_d = [rows.to(dev) for rows in fold_rows]
    perm_gen = torch.Generator(device=dev).manual_seed(seed)
    chunk = relabelling_chunk(big_n, dev)
    current_rows = torch.empty(big_n, count, dtype=torch.bool, device=dev)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        targets = fold_relabellings(
            labels_d, fold_rows_d, stop - start, perm_gen, keep_first=start == 0
        )
        current_rows[:, start:stop] = targets > 0.5
        del targets

    stats: dict[str, np.ndarray] = {}
    made: dict[str, Any] = {}
    if "mmd" in names:
        median = median_distance(z, generator=gen)
        bandwidths = [median * s for s in BANDWIDTH_SCALES]
        mmd2, within_x, within_y = indicator_mmd2(z, ~current_rows, bandwidths)
        stats["mmd"] = mmd2
        made["mmd"] = lambda: mmd_result(
            mmd2, within_x, within_y, bandwidths=bandwidths, bandwidth_scales=BANDWIDTH_SCALES,
            median=median, sizes=(n, m), total_sizes=(n_total, m_total),
            subsampled=keep_x is not None or keep_y is not None, device=dev, seed=seed,
        )  # fmt: skip
    if "topics" in names:
        k, pooled_labels, centroids = fit_topics(z.cpu().numpy(), n, topic_clusters, seed)
        labels_xy = np.empty_like(pooled_labels)
        labels_xy[row_of.numpy()] = pooled_labels  # back to the order x then y
        bins = tested_bins(labels_xy, k, n)
        cluster_of = torch.from_numpy(pooled_labels.astype(np.int64))
    if "classifier" in names:
        projections, offsets = _fold_projections(z, fold_rows_d, labels_d, RIDGE)

    aucs, distances, chis = [], [], []
    observed_scores = torch.empty(0)
    total = z.sum(0, dtype=torch.float64)
    for start in range(0, count, chunk):
        targets = current_rows[:, start : start + chunk].to(torch.float32)
        if "classifier" in names:
            scores = _out_of_fold(z, targets, fold_rows_d, projections, offsets)
            if start == 0:
                observed_scores = scores[:, 0].cpu()
            aucs.append(_auc(scores, targets, n, m))
            del scores
        if "centroid" in names:
            distances.append(centroid_distances(z, total, (1.0 - targets).T.contiguous()))
        if "topics" in names:
            chis.append(split_chi_square(cluster_of, targets, bins))
        del targets

    if "classifier" in names:
        auc = torch.cat(aucs)
        stats["classifier"] = auc.cpu().numpy()
        positions = torch.nonzero(labels > 0.5).flatten()  # current rows, in pooled order
        index = row_of[positions] - n
        if keep_y is not None:
            index = keep_y[index]
        made["classifier"] = lambda: classifier_result(
            auc, observed_scores[positions], index, sizes=(n, m), folds=FOLDS, ridge=RIDGE,
            examples=CLASSIFIER_EXAMPLES, device=dev, seed=seed,
        )  # fmt: skip
    if "centroid" in names:
        distance = torch.cat(distances)
        stats["centroid"] = distance.cpu().numpy()
        made["centroid"] = lambda: centroid_result(distance, sizes=(n, m), device=dev, seed=seed)
    if "topics" in names:
        chi = torch.cat(chis).cpu().numpy()
        stats["topics"] = chi
        made["topics"] = lambda: _topics_result(
            x, y, labels_xy, centroids, bins, chi, seed,
            _pick(reference_texts, keep_x), _pick(current_texts, keep_y),
        )  # fmt: skip

    matrix = np.stack([np.asarray(stats[name], dtype=np.float64) for name in names])
    marginal, _ = min_p_step_down(matrix)
    rows = [names.index(t) for t in family]
    _, decided = min_p_step_down(matrix[rows])
    # A diagnostic's "adjusted" p is its own: it takes no part in the decision.
    adjusted = marginal.copy()
    adjusted[rows] = decided
    joint = {
        "method": "westfall-young step-down min-p",
        "folds": folds,
        "permutations": permutations,
        "n_reference_total": n_total,
        "n_current_total": m_total,
    }
    results = []
    for name, p in zip(names, marginal, strict=True):
        res = made[name]()
        assert res.p_value == p  # the same counts, by the same formula
        results.append(dataclasses.replace(res, details={**res.details, "joint": joint}))
    rejected = [
        name in family and bool(a <= alpha) for name, a in zip(names, adjusted, strict=True)
    ]
    return JointResult(
        results=results,
        adjusted=[float(a) for a in adjusted],
        rejected=rejected,
        drifting=any(rejected),
        details={
            **joint,
            "alpha": alpha,
            "tests": list(names),
            "decided_on": family,
            **({"statistics": matrix} if keep_statistics else {}),
        },
    )


def min_p_step_down(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginal and Westfall-Young step-down min-p adjusted p-values.

    `stats` is (J, S): row j holds test j's statistic (larger = more drift) for relabelling 0
    (the observed one) to S - 1. A statistic's p-value among its row is the share of the row at
    least as large, ties included, so the marginal p is (1 + #{T_b ≥ T_0, b ≥ 1}) / S.
    """
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"stats must be (tests, relabellings), got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("stats contain NaN")
    size = s.shape[1]
    # at_least[j, b] = #{b': s[j, b'] ≥ s[j, b]}: relabelling b's p-value for test j, times S.
    at_least = np.stack([size - np.searchsorted(np.sort(row), row, side="left") for row in s])
    observed = at_least[:, 0]
    adjusted = np.empty(s.shape[0], dtype=np.float64)
    running = 0
    order = np.argsort(observed, kind="stable")
    for i, j in enumerate(order):
        smallest = at_least[order[i:]].min(0)  # min-p over the tests not yet passed
        running = max(running, int((smallest <= observed[j]).sum()))
        adjusted[j] = running / size
    return observed / size, adjusted


def _check_arguments(
    tests: Sequence[str],
    alpha: float,
    permutations: int,
    max_samples: int | None,
    topic_clusters: int,
) -> list[str]:
    if isinstance(tests, str):
        raise ValueError(f"tests must be a sequence of test names, got the string {tests!r}")
    names = list(tests)
    if not names:
        raise ValueError(f"tests is empty; choose from {', '.join(TESTS)}")
    unknown = [t for t in names if t not in TESTS]
    if unknown:
        raise ValueError(f"unknown test(s) {unknown}; choose from {', '.join(TESTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"tests lists a test twice: {names}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    if max_samples is not None and max_samples < 2:
        raise ValueError("max_samples must be at least 2")
    if topic_clusters < 2:
        raise ValueError("topic_clusters must be at least 2")
    return names


def _single(
    name: str,
    reference: ArrayLike,
    current: ArrayLike,
    *,
    alpha: float,
    permutations: int,
    seed: int,
    device: str | torch.device | None,
    max_samples: int | None,
    topic_clusters: int,
    reference_texts: Sequence[str] | None,
    current_texts: Sequence[str] | None,
) -> JointResult:
    """One test: its own function, called as the runner calls it."""
    if name == "mmd":
        res = mmd_test(
            reference, current, permutations=permutations, max_samples=max_samples, seed=seed,
            device=device,
        )  # fmt: skip
    elif name == "classifier":
        res = classifier_test(
            reference, current, permutations=permutations, seed=seed, device=device
        )
    elif name == "centroid":
        res = centroid_test(reference, current, permutations=permutations, seed=seed, device=device)
    else:
        res = topic_test(
            reference, current, clusters=topic_clusters, seed=seed,
            reference_texts=reference_texts, current_texts=current_texts,
        )  # fmt: skip
    rejected = res.p_value <= alpha
    return JointResult(
        results=[res],
        adjusted=[res.p_value],
        rejected=[rejected],
        drifting=rejected,
        details={"method": "single test", "alpha": alpha, "tests": [name]},
    )


def _subsample(size: int, limit: int | None, gen: torch.Generator) -> torch.Tensor | None:
    """Seeded row numbers of a random subset of `limit` rows, or None when all are kept."""
    if limit is None or size <= limit:
        return None
    return torch.randperm(size, generator=gen)[:limit]


def _pool(
    n: int, m: int, folds: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Stratified folds in blocks of positions, each in a random order.

    Returns the pooled row order (row numbers of x then y: < n reference), the labels of the
    positions (1.0 = current) and each fold's positions.
    """
    ref = torch.randperm(n, generator=gen)
    cur = torch.randperm(m, generator=gen) + n
    blocks = []
    for f in range(folds):
        members = torch.cat([ref[f::folds], cur[f::folds]])
        blocks.append(members[torch.randperm(members.numel(), generator=gen)])
    row_of = torch.cat(blocks)
    bounds = np.cumsum([0] + [b.numel() for b in blocks]).tolist()
    fold_rows = [torch.arange(a, b) for a, b in itertools.pairwise(bounds)]
    return row_of, (row_of >= n).to(torch.float32), fold_rows


def _pick(texts: Sequence[str] | None, keep: torch.Tensor | None) -> Sequence[str] | None:
    if texts is None or keep is None:
        return texts
    return [texts[int(i)] for i in keep]


def _topics_result(
    x: torch.Tensor,
    y: torch.Tensor,
    labels: np.ndarray,
    centroids: np.ndarray,
    bins: list[list[int]],
    chi: np.ndarray,
    seed: int,
    reference_texts: Sequence[str] | None,
    current_texts: Sequence[str] | None,
) -> TwoSampleResult:
    observed = float(chi[0])
    exceed = int((chi[1:] >= observed).sum())
    dof = len(bins) - 1
    asymptotic = float(chi2_distribution.sf(observed, dof)) if dof > 0 else 1.0
    return topic_result(
        x.cpu().numpy(),
        y.cpu().numpy(),
        labels,
        centroids,
        bins,
        statistic=observed,
        p_value=(1 + exceed) / len(chi),
        details={
            "dof": dof,
            "seed": seed,
            "permutations": len(chi) - 1,
            "exceedances": exceed,
            "chi2_p_value": asymptotic,
        },
        reference_texts=reference_texts,
        current_texts=current_texts,
        examples=TOPIC_EXAMPLES,
    )
