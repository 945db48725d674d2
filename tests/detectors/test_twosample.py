"""Classifier, centroid and topic-mix drift tests: exact pieces, and behaviour on real text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from driftline.detectors.centroid import centroid_test, permutation_p_value
from driftline.detectors.classifier import _auc, _fold_projections, _out_of_fold, classifier_test
from driftline.detectors.result import TwoSampleResult
from driftline.detectors.topics import _merge_small, topic_test
from tests.detectors.conftest import Corpus

Test = Callable[..., TwoSampleResult]
# Few permutations keep the file fast; 99 still resolves p = 0.01 and 199 resolves p < 0.01.
FAST: dict[str, tuple[Test, dict[str, Any]]] = {
    "classifier": (classifier_test, {"permutations": 99}),
    "centroid": (centroid_test, {"permutations": 99}),
    "topics": (topic_test, {}),
}
SHIFTED = ("games", "fonts")


def blobs(n: int, m: int, d: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.normal(size=(m, d)) + shift).astype(np.float32)
    return x, y


def topic_shift(corpus: Corpus, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference: 150 rows without games or fonts; current: 70 games/fonts rows and 30 others."""
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.setdiff1d(np.arange(len(corpus.sections)), corpus.where(*SHIFTED)))
    new = rng.choice(corpus.where(*SHIFTED), 70, replace=False)
    return others[:150], rng.permutation(np.concatenate([new, others[150:180]]))


# ---------------------------------------------------------------- centroid


def test_centroid_statistic_is_the_cosine_distance_of_the_means() -> None:
    x, y = blobs(40, 30, 6, 0.3, seed=1)
    res = centroid_test(x, y, permutations=49, seed=0)
    mx, my = x.astype(np.float64).mean(0), y.astype(np.float64).mean(0)
    want = 1 - mx @ my / np.linalg.norm(mx) / np.linalg.norm(my)
    assert (res.test, res.n_reference, res.n_current) == ("centroid", 40, 30)
    assert res.statistic == pytest.approx(want, abs=1e-6)
    assert res.effect_size == res.statistic
    assert res.p_value == (1 + res.details["exceedances"]) / 50
    assert res.details["permutations"] == 49
    json.dumps(res.details)


def test_centroid_p_value_bounds_and_ties() -> None:
    x, y = blobs(30, 30, 4, 3.0, seed=2)
    assert centroid_test(x, y, permutations=19).p_value == pytest.approx(1 / 20)
    same = np.ones((10, 4), dtype=np.float32)  # every split has the same means: all tie, p = 1
    res = centroid_test(same, same, permutations=30)
    assert (res.p_value, res.statistic) == (1.0, pytest.approx(0.0, abs=1e-6))


def test_permutation_p_value_counts_ties_as_exceedances() -> None:
    assert permutation_p_value(0.5, np.array([0.1, 0.5, 0.7, 0.2])) == (3 / 5, 2)
    assert permutation_p_value(1.0, torch.zeros(99)) == (0.01, 0)


# ---------------------------------------------------------------- classifier


def test_out_of_fold_scores_equal_ridge_refits_for_every_relabelling() -> None:
    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(53, 7)).astype(np.float32))
    labels = torch.from_numpy((rng.random(53) < 0.4).astype(np.float32))
    fold_of = rng.integers(0, 3, 53)
    fold_rows = [torch.from_numpy(np.flatnonzero(fold_of == k)) for k in range(3)]
    targets = labels[:, None].repeat(1, 4)
    for rows in fold_rows:  # columns 1..3: labels permuted within each fold
        for col in (1, 2, 3):
            targets[rows, col] = labels[rows][torch.randperm(len(rows))]
    projections, offsets = _fold_projections(z, fold_rows, labels, ridge=0.7)
    scores = _out_of_fold(z, targets, fold_rows, projections, offsets)
    n1 = int(labels.sum())
    aucs = _auc(scores, targets, 53 - n1, n1)

    zz = z.double().numpy()
    for col in range(4):
        want = np.empty(53)
        for rows in fold_rows:
            train = np.setdiff1d(np.arange(53), rows.numpy())
            centred = zz[train] - zz[train].mean(0)
            alpha = 0.7 * np.trace(centred.T @ centred) / 7
            fit = Ridge(alpha=alpha).fit(zz[train], targets[train, col].numpy())
            want[rows.numpy()] = fit.predict(zz[rows.numpy()])
        assert scores[:, col].numpy() == pytest.approx(want, abs=1e-5)
        assert float(aucs[col]) == pytest.approx(roc_auc_score(targets[:, col], want))


def test_auc_halves_ties() -> None:
    scores = torch.tensor([[0.0], [1.0], [1.0], [2.0]])
    targets = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    assert float(_auc(scores, targets, 2, 2)[0]) == pytest.approx(0.875)


def test_classifier_result_fields() -> None:
    x, y = blobs(40, 25, 5, 1.0, seed=4)
    res = classifier_test(x, y, permutations=49, examples=3, seed=1)
    assert (res.test, res.n_reference, res.n_current) == ("classifier", 40, 25)
    assert res.statistic > 0.9
    assert res.effect_size == pytest.approx(2 * res.statistic - 1)
    assert res.p_value == pytest.approx(1 / 50)
    like = res.details["current_like"]
    assert len(like) == 3 and all(0 <= e["index"] < 25 for e in like)
    assert [e["score"] for e in like] == sorted((e["score"] for e in like), reverse=True)
    assert res.details["folds"] == 5
    json.dumps(res.details)
    x, y = blobs(40, 25, 5, 0.0, seed=4)
    assert classifier_test(x, y, permutations=9).effect_size >= 0.0  # clipped, never negative


# ---------------------------------------------------------------- topics


def test_merge_small_clusters_until_expected_counts_reach_five() -> None:
    table = np.array([[40, 30, 6, 3, 20], [40, 30, 4, 2, 20]])
    bins = _merge_small(table)
    assert sorted(j for b in bins for j in b) == [0, 1, 2, 3, 4]
    merged = np.stack([table[:, b].sum(1) for b in bins], axis=1)
    expected = np.outer(merged.sum(1), merged.sum(0)) / merged.sum()
    assert expected.min() >= 5
    assert sorted(bins) == [[0], [1], [2, 3], [4]]  # only the two small ones merged
    assert _merge_small(np.array([[5, 0], [0, 5]])) == [[0, 1]]


def test_topic_statistic_is_the_chi_square_of_the_tested_table() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 8)) * 4
    x = (centres[rng.integers(0, 4, 80)] + rng.normal(size=(80, 8))).astype(np.float32)
    y = (centres[rng.choice(4, 60, p=[0.1, 0.1, 0.1, 0.7])] + rng.normal(size=(60, 8))).astype(
        np.float32
    )
    res = topic_test(x, y, clusters=4, seed=0)
    rows = {r["cluster"]: r for r in res.details["clusters"]}
    table = np.array([[rows[j][f"{w}_count"] for j in range(4)] for w in ("reference", "current")])
    merged = np.stack([table[:, b].sum(1) for b in res.details["tested_bins"]], axis=1)
    chi2, p, dof, _ = chi2_contingency(merged, correction=False)
    assert (res.statistic, res.p_value, res.details["dof"]) == (
        pytest.approx(chi2),
        pytest.approx(p),
        dof,
    )
    assert res.effect_size == pytest.approx(np.sqrt(chi2 / 140))
    changes = [abs(r["change"]) for r in res.details["clusters"]]
    assert changes == sorted(changes, reverse=True)
    assert res.details["clusters"][0]["change"] > 0.3  # the cluster that took 70% of current
    json.dumps(res.details)


def test_topic_clusters_are_capped_by_the_reference_size() -> None:
    x, y = blobs(35, 50, 4, 0.0, seed=6)
    assert topic_test(x, y, clusters=8).details["k"] == 3
    same = np.ones((30, 4), dtype=np.float32)  # one distinct row: one topic, nothing to test
    res = topic_test(same, same, current_texts=["a"] * 30)
    assert (res.details["k"], res.statistic, res.p_value) == (1, 0.0, 1.0)
    assert res.details["clusters"][0]["examples"] == ["a"] * 3


# ---------------------------------------------------------------- all three


@pytest.mark.parametrize("name", FAST)
def test_deterministic_given_seed_and_accepts_torch(name: str) -> None:
    test, kwargs = FAST[name]
    x, y = blobs(45, 40, 6, 0.2, seed=7)
    first = test(x, y, seed=3, **kwargs)
    assert first == test(x, y, seed=3, **kwargs)
    again = test(torch.from_numpy(x).double(), torch.from_numpy(y), seed=3, **kwargs)
    assert again.p_value == first.p_value
    assert again.statistic == pytest.approx(first.statistic, abs=1e-6)


@pytest.mark.parametrize("name", FAST)
def test_no_shift_rarely_alarms_on_real_text(name: str, corpus: Corpus) -> None:
    test, kwargs = FAST[name]
    vectors = corpus.response_vectors
    rng = np.random.default_rng(11)
    p_values = []
    for trial in range(10):
        rows = rng.permutation(len(vectors))
        p_values.append(test(vectors[rows[:100]], vectors[rows[100:200]], seed=trial, **kwargs))
    rejections = sum(r.p_value < 0.05 for r in p_values)
    assert rejections <= 3  # 10 trials at alpha 0.05: P(≥ 4 rejections) < 0.002 if calibrated


@pytest.mark.parametrize("name", FAST)
def test_topic_shift_on_real_text_is_detected(name: str, corpus: Corpus) -> None:
    test, kwargs = FAST[name]
    kwargs = {**kwargs, "permutations": 199} if "permutations" in kwargs else kwargs
    ref, cur = topic_shift(corpus)
    vectors = corpus.response_vectors
    res = test(vectors[ref], vectors[cur], **kwargs)
    assert res.p_value < 0.01
    assert (res.n_reference, res.n_current) == (150, 100)


def test_classifier_names_current_like_calls_from_the_new_topics(corpus: Corpus) -> None:
    ref, cur = topic_shift(corpus)
    vectors = corpus.response_vectors
    res = classifier_test(vectors[ref], vectors[cur], permutations=19, examples=5)
    picked = cur[[e["index"] for e in res.details["current_like"]]]
    assert set(corpus.sections[picked]) <= set(SHIFTED)


def test_topics_name_the_grown_clusters_with_texts_of_the_new_topics(corpus: Corpus) -> None:
    ref, cur = topic_shift(corpus)
    vectors, texts = corpus.response_vectors, corpus.responses
    res = topic_test(
        vectors[ref],
        vectors[cur],
        reference_texts=[texts[i] for i in ref],
        current_texts=[texts[i] for i in cur],
    )
    grown = [c for c in res.details["clusters"] if c["change"] > 0.15]
    section_of = {texts[i]: corpus.sections[i] for i in cur}
    named = [section_of[t] for c in grown for t in c["examples"]]
    assert len(named) == 3 * len(grown)
    assert set(named) == set(SHIFTED)  # each new topic has grown a cluster, shown by its texts
    shrunk = [c for c in res.details["clusters"] if c["change"] < 0]
    assert shrunk and all(len(c["reference_examples"]) == 3 for c in shrunk)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        (np.zeros((0, 8)), np.ones((30, 8)), "reference has 0 rows"),
        (np.ones((30, 8)), np.zeros((0, 8)), "current has 0 rows"),
        (np.ones((30, 8)), np.ones((30, 9)), "dimension mismatch"),
        (np.ones(30), np.ones((30, 8)), "2-d"),
        (np.full((30, 8), np.nan), np.ones((30, 8)), "NaN"),
        (np.ones((30, 8)), np.ones((1, 8)), "current has 1 rows"),
    ],
)
def test_rejects_bad_windows(
    name: str, reference: np.ndarray, current: np.ndarray, message: str
) -> None:
    test, kwargs = FAST[name]
    with pytest.raises(ValueError, match=message):
        test(reference, current, **kwargs)


@pytest.mark.parametrize(
    ("test", "reference", "current", "kwargs", "message"),
    [
        (classifier_test, (4, 3), (30, 3), {}, "reference has 4 rows.*at least 5"),
        (classifier_test, (30, 3), (30, 3), {"folds": 1}, "folds"),
        (classifier_test, (30, 3), (30, 3), {"permutations": 0}, "permutations"),
        (classifier_test, (30, 3), (30, 3), {"ridge": 0.0}, "ridge"),
        (centroid_test, (1, 3), (30, 3), {}, "reference has 1 rows.*at least 2"),
        (centroid_test, (30, 3), (30, 3), {"permutations": 0}, "permutations"),
        (topic_test, (19, 3), (30, 3), {}, "reference has 19 rows.*at least 20"),
        (topic_test, (30, 3), (30, 3), {"clusters": 1}, "clusters"),
        (topic_test, (30, 3), (30, 3), {"current_texts": ["a"] * 29}, "current_texts has 29"),
        (topic_test, (30, 3), (30, 3), {"reference_texts": []}, "reference_texts has 0"),
    ],
)
def test_rejects_bad_arguments(
    test: Test,
    reference: tuple[int, int],
    current: tuple[int, int],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match=message):
        test(rng.normal(size=reference), rng.normal(size=current), **kwargs)
