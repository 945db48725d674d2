"""Joint permutation test of a window: the min-p step-down, agreement with the single tests, and
behaviour on real text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from driftline.detectors.centroid import centroid_test
from driftline.detectors.classifier import classifier_test
from driftline.detectors.joint import TESTS, joint_test, min_p_step_down
from driftline.detectors.mmd import mmd_test
from driftline.detectors.result import TwoSampleResult
from driftline.detectors.topics import topic_test
from tests.detectors.conftest import Corpus
from tests.detectors.test_twosample import SHIFTED, blobs


@pytest.fixture(scope="module")
def topic_shift(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    """Reference: 150 rows without games or fonts; current: 70 games/fonts rows and 30 others."""
    rng = np.random.default_rng(0)
    others = rng.permutation(np.setdiff1d(np.arange(len(corpus.sections)), corpus.where(*SHIFTED)))
    new = rng.choice(corpus.where(*SHIFTED), 70, replace=False)
    return others[:150], rng.permutation(np.concatenate([new, others[150:180]]))


# ---------------------------------------------------------------- the step-down


def naive_step_down(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Westfall-Young step-down min-p by its definition, with loops."""
    tests, size = stats.shape
    p = np.array(
        [[np.mean(stats[j] >= stats[j, b]) for b in range(size)] for j in range(tests)]
    )  # p[j, b]: relabelling b's p-value for test j among all of them, ties included
    marginal = p[:, 0]
    order = sorted(range(tests), key=lambda j: (marginal[j], j))
    adjusted = np.zeros(tests)
    previous = 0.0
    for i, j in enumerate(order):
        rest = order[i:]
        share = np.mean([min(p[r, b] for r in rest) <= marginal[j] for b in range(size)])
        previous = adjusted[j] = max(previous, share)
    return marginal, adjusted


@pytest.mark.parametrize("seed", range(5))
def test_step_down_equals_its_definition_and_is_bounded(seed: int) -> None:
    rng = np.random.default_rng(seed)
    common = rng.integers(0, 6, 60)  # shared part: correlated tests; small integers: many ties
    stats = (common + rng.integers(0, 4, (4, 60))).astype(float)
    stats[seed % 4, 0] += 3 * seed  # one test's observed statistic pushed up
    marginal, adjusted = min_p_step_down(stats)
    want_marginal, want_adjusted = naive_step_down(stats)
    assert marginal == pytest.approx(want_marginal)
    assert adjusted == pytest.approx(want_adjusted)
    assert (adjusted >= marginal).all()
    order = np.argsort(marginal, kind="stable")
    assert (np.diff(adjusted[order]) >= 0).all()
    # never more conservative than Bonferroni-Holm on the same permutation p-values
    holm = np.maximum.accumulate(np.minimum(marginal[order] * np.arange(4, 0, -1), 1.0))
    assert (adjusted[order] <= holm + 1e-12).all()


def test_step_down_costs_nothing_for_tests_that_agree() -> None:
    row = np.random.default_rng(1).normal(size=100)
    row[0] = 2.0
    stats = np.stack([row, 3 * row + 1, np.exp(row)])  # the same ranks in every test
    marginal, adjusted = min_p_step_down(stats)
    assert adjusted == pytest.approx(marginal)
    assert marginal[0] == pytest.approx(np.mean(row >= 2.0))


def test_step_down_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        min_p_step_down(np.array([[1.0, np.nan, 0.0]]))


# ---------------------------------------------------------------- one test = the plain test


SINGLE: dict[str, Callable[..., TwoSampleResult]] = {
    "mmd": lambda x, y, **kw: mmd_test(x, y, permutations=49, max_samples=20_000, seed=3),
    "classifier": lambda x, y, **kw: classifier_test(x, y, permutations=49, seed=3),
    "centroid": lambda x, y, **kw: centroid_test(x, y, permutations=49, seed=3),
    "topics": lambda x, y, **kw: topic_test(x, y, clusters=4, seed=3, **kw),
}


@pytest.mark.parametrize("name", TESTS)
def test_a_single_test_is_the_plain_test(name: str) -> None:
    x, y = blobs(45, 40, 6, 0.25, seed=7)
    texts = {"reference_texts": [f"r{i}" for i in range(45)]} if name == "topics" else {}
    res = joint_test(
        x, y, tests=[name], alpha=0.05, permutations=49, seed=3, topic_clusters=4, **texts
    )
    plain = SINGLE[name](x, y, **texts)
    assert res.results == [plain]
    assert res.adjusted == [plain.p_value]
    assert res.rejected == [plain.p_value <= 0.05]
    assert res.drifting == (plain.p_value <= 0.05)


# ---------------------------------------------------------------- the joint test


def test_joint_result_fields_and_determinism() -> None:
    x, y = blobs(60, 50, 8, 0.3, seed=2)
    res = joint_test(x, y, permutations=99, seed=4)
    assert [r.test for r in res.results] == list(TESTS)
    assert all((r.n_reference, r.n_current) == (60, 50) for r in res.results)
    assert all(r.details["permutations"] == 99 for r in res.results)
    for r, a in zip(res.results, res.adjusted, strict=True):
        assert r.p_value == (1 + r.details["exceedances"]) / 100
        assert 1 / 100 <= r.p_value <= a <= 1.0
    assert res.rejected == [a <= 0.05 for a in res.adjusted]
    assert res.drifting == any(res.rejected)
    assert res.details["folds"] == 5 and res.details["tests"] == list(TESTS)
    json.dumps([r.details for r in res.results])
    json.dumps(res.details)
    again = joint_test(torch.from_numpy(x).double(), torch.from_numpy(y), permutations=99, seed=4)
    assert again.adjusted == res.adjusted
    assert [r.p_value for r in again.results] == [r.p_value for r in res.results]
    # without the classifier the relabellings are plain permutations of the pooled rows
    assert joint_test(x, y, tests=["mmd", "centroid"], permutations=9).details["folds"] == 1


def test_kept_statistics_give_the_decision_and_any_subset_of_it() -> None:
    x, y = blobs(60, 50, 8, 0.3, seed=6)
    res = joint_test(x, y, permutations=49, seed=1, keep_statistics=True)
    matrix = res.details["statistics"]
    assert isinstance(matrix, np.ndarray) and matrix.shape == (len(TESTS), 50)
    assert matrix.dtype == np.float64
    marginal, adjusted = min_p_step_down(matrix)
    assert marginal.tolist() == [r.p_value for r in res.results]
    assert adjusted.tolist() == res.adjusted
    assert matrix[:, 0].tolist() == pytest.approx([r.statistic for r in res.results])
    # a subset of the tests, read off the same relabellings
    rows = [TESTS.index("mmd"), TESTS.index("centroid")]
    sub_marginal, sub_adjusted = min_p_step_down(matrix[rows])
    assert sub_marginal.tolist() == [res.results[j].p_value for j in rows]
    assert (sub_adjusted <= adjusted[rows] + 1e-12).all()  # fewer tests: never more conservative
    # the same decision as without the matrix, which is off by default (details stay JSON)
    plain = joint_test(x, y, permutations=49, seed=1)
    assert "statistics" not in plain.details and plain.adjusted == res.adjusted
    assert "statistics" not in joint_test(x, y, tests=["mmd"], keep_statistics=True).details


def test_statistics_match_the_plain_tests() -> None:
    """The joint test scores the same statistics; only their relabellings are shared."""
    x, y = blobs(60, 50, 8, 0.3, seed=5)
    res = {r.test: r for r in joint_test(x, y, permutations=19, seed=0).results}
    assert res["mmd"].statistic == pytest.approx(mmd_test(x, y, permutations=1).statistic)
    assert res["centroid"].statistic == pytest.approx(
        centroid_test(x, y, permutations=1).statistic, abs=1e-6
    )
    topics = res["topics"]
    table = np.array(
        [[c[f"{w}_count"] for c in topics.details["clusters"]] for w in ("reference", "current")]
    )
    assert table.sum(1).tolist() == [60, 50]
    assert topics.effect_size == pytest.approx(np.sqrt(topics.statistic / 110))
    assert 0.0 <= topics.details["chi2_p_value"] <= 1.0
    assert 0.0 <= res["classifier"].statistic <= 1.0


def test_large_windows_are_subsampled_with_texts_kept_in_step() -> None:
    x, y = blobs(100, 80, 6, 2.0, seed=8)
    ref_texts = [f"ref {i}" for i in range(100)]
    cur_texts = [f"cur {i}" for i in range(80)]
    res = joint_test(
        x, y, permutations=19, max_samples=60, reference_texts=ref_texts, current_texts=cur_texts
    )
    by_test = {r.test: r for r in res.results}
    assert all((r.n_reference, r.n_current) == (60, 60) for r in res.results)
    assert by_test["mmd"].details["subsampled"] is True
    assert res.details["n_reference_total"] == 100
    for entry in by_test["classifier"].details["current_like"]:  # indices into `current`
        assert 0 <= entry["index"] < 80
        assert entry["score"] > 0.5  # a shift of 2 per coordinate: current rows score high
    for cluster in by_test["topics"].details["clusters"]:
        assert set(cluster["examples"]) <= set(cur_texts)
        assert set(cluster["reference_examples"]) <= set(ref_texts)


def test_no_shift_rarely_alarms_on_real_text(corpus: Corpus) -> None:
    vectors = corpus.response_vectors
    rng = np.random.default_rng(21)
    trials, alarms, smallest = 20, 0, []
    for trial in range(trials):
        rows = rng.permutation(len(vectors))
        res = joint_test(
            vectors[rows[:100]], vectors[rows[100:200]], permutations=99, seed=trial, alpha=0.05
        )
        alarms += res.drifting
        smallest.append(min(res.adjusted))
    # The min-p step is exact, so alarms ~ Binomial(20, ≤ 0.05): P(≥ 5) < 0.003 if calibrated.
    assert alarms <= 4
    # and not conservative: under no shift the family's min-p is uniform (mean 0.5, sd 0.065
    # over 20 trials; ties push it up a little): 0.25 and 0.75 are nearly 4 sd away.
    assert 0.25 <= float(np.mean(smallest)) <= 0.75


def test_topic_shift_on_real_text_is_detected_by_every_test(
    corpus: Corpus, topic_shift: tuple[np.ndarray, np.ndarray]
) -> None:
    ref, cur = topic_shift
    vectors, texts = corpus.response_vectors, corpus.responses
    res = joint_test(
        vectors[ref],
        vectors[cur],
        permutations=199,
        reference_texts=[texts[i] for i in ref],
        current_texts=[texts[i] for i in cur],
    )
    assert res.drifting and all(res.rejected)
    assert all(a == pytest.approx(1 / 200) for a in res.adjusted)
    by_test = {r.test: r for r in res.results}
    picked = cur[[e["index"] for e in by_test["classifier"].details["current_like"]]]
    assert set(corpus.sections[picked]) <= set(SHIFTED)
    grown = [c for c in by_test["topics"].details["clusters"] if c["change"] > 0.15]
    section_of = {texts[i]: corpus.sections[i] for i in cur}
    assert grown and {section_of[t] for c in grown for t in c["examples"]} <= set(SHIFTED)


def test_adjusted_p_values_are_never_below_the_marginal_ones_on_real_text(
    corpus: Corpus,
) -> None:
    vectors = corpus.response_vectors
    rng = np.random.default_rng(5)
    mild = np.setdiff1d(np.arange(len(vectors)), corpus.where("games"))
    for trial in range(4):  # a mild shift: a few games rows in the current window
        rows = rng.permutation(mild)
        cur = np.concatenate([rows[100:180], rng.choice(corpus.where("games"), 8 + 4 * trial)])
        res = joint_test(vectors[rows[:100]], vectors[cur], permutations=99, seed=trial)
        marginal = [r.p_value for r in res.results]
        assert all(a >= p for a, p in zip(res.adjusted, marginal, strict=True))
        assert min(res.adjusted) <= min(1.0, 4 * min(marginal))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "message"),
    [
        ((30, 3), (30, 3), {"tests": []}, "tests is empty"),
        ((30, 3), (30, 3), {"tests": ["mmd", "ks"]}, r"unknown test\(s\) \['ks'\]"),
        ((30, 3), (30, 3), {"tests": "mmd"}, "sequence of test names"),
        ((30, 3), (30, 3), {"tests": ["mmd", "mmd"]}, "twice"),
        ((30, 3), (30, 3), {"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
        ((30, 3), (30, 3), {"permutations": 0}, "permutations must be at least 1"),
        ((30, 3), (30, 3), {"max_samples": 1}, "max_samples must be at least 2"),
        ((30, 3), (30, 3), {"max_samples": 4}, "max_samples must be at least 5"),
        ((30, 3), (30, 3), {"topic_clusters": 1}, "topic_clusters"),
        ((30, 3), (30, 4), {}, "dimension mismatch"),
        ((4, 3), (30, 3), {}, "reference has 4 rows.*classifier test needs at least 5"),
        ((30, 3), (1, 3), {"tests": ["mmd", "centroid"]}, "current has 1 rows"),
        ((19, 3), (30, 3), {}, "reference has 19 rows.*topics test needs at least 20"),
        ((30, 3), (30, 3), {"current_texts": ["a"] * 29}, "current_texts has 29 entries"),
        ((30, 3), (30, 3), {"reference_texts": []}, "reference_texts has 0 entries"),
    ],
)
def test_rejects_bad_input(
    reference: tuple[int, int], current: tuple[int, int], kwargs: dict[str, Any], message: str
) -> None:
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match=message):
        joint_test(rng.normal(size=reference), rng.normal(size=current), **kwargs)


def test_rejects_nan_and_flat_arrays() -> None:
    with pytest.raises(ValueError, match="NaN"):
        joint_test(np.full((30, 3), np.nan), np.ones((30, 3)))
    with pytest.raises(ValueError, match="2-d"):
        joint_test(np.ones(30), np.ones((30, 3)))


def test_diagnostics_are_reported_but_never_decide() -> None:
    """The decision is taken on `decide_on` alone: a diagnostic test that sees the shift (centroid,
    on a mean shift) is reported with its own small p but never rejects."""
    x, y = blobs(150, 100, 8, 0.6, seed=4)
    both = joint_test(x, y, tests=("mmd", "centroid"), permutations=99, seed=1)
    alone = joint_test(x, y, tests=("mmd", "centroid"), permutations=99, seed=1, decide_on=("mmd",))
    assert [r.p_value for r in alone.results] == [r.p_value for r in both.results]
    mmd, centroid = alone.results
    assert alone.adjusted == [mmd.p_value, centroid.p_value]  # a family of one: nothing to adjust
    assert centroid.p_value <= 0.05 and alone.rejected[1] is False
    assert alone.rejected[0] == (mmd.p_value <= 0.05) and alone.drifting == alone.rejected[0]
    assert alone.details["decided_on"] == ["mmd"]
    with pytest.raises(ValueError, match="decide_on"):
        joint_test(x, y, tests=("mmd", "centroid"), permutations=19, decide_on=("topics",))
