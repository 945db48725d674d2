"""Per-output flags and multiple testing: hand-computed corrections, conformal validity by
simulation, and relevance / novelty on real text with planted off-topic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.detectors.flags import (
    DEFAULT_RELEVANCE_THRESHOLD,
    REASONS,
    Flag,
    NoveltyScorer,
    call_flags,
    is_empty,
    is_refusal,
    is_truncated,
    refusal_phrase,
    relevance,
    relevance_threshold,
    robust_z,
)
from driftline.detectors.multiple import benjamini_hochberg, conformal_p_values, holm
from tests.detectors.conftest import Corpus

# Benjamini & Hochberg (1995), section 4: fifteen p-values from a clinical trial. BH at 0.05
# rejects the four smallest; Bonferroni-type step-down procedures (Holm) only three.
BH_1995 = [
    0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
    0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.0000,
]  # fmt: skip


# --- multiple testing --------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.005 ≤ 0.05/4, 0.01 ≤ 0.05/3, 0.03 > 0.05/2 stops the walk; order is kept
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm([0.5], 0.05) == [False]
    assert holm([0.04], 0.05) == [True]


def test_holm_matches_adjusted_p_values() -> None:
    # statsmodels multipletests(method="holm") adjusts [.01,.02,.03,.04,.05] to
    # [.05,.08,.09,.09,.09]: rejected exactly where the adjusted value is ≤ alpha
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    assert holm(p, 0.05) == [True, False, False, False, False]
    assert holm(p, 0.085) == [True, True, False, False, False]
    assert holm(p, 0.1) == [True] * 5
    assert holm(BH_1995, 0.05) == [True] * 3 + [False] * 12


def test_benjamini_hochberg_by_hand() -> None:
    assert benjamini_hochberg(BH_1995, 0.05) == [True] * 4 + [False] * 11
    # step-up: 0.035 ≤ 3·0.05/4 rejects all three smallest although 0.02 > 0.05/4 (Holm: none)
    p = [0.035, 0.9, 0.02, 0.03]
    assert benjamini_hochberg(p, 0.05) == [True, False, True, True]
    assert holm(p, 0.05) == [False] * 4
    # statsmodels fdr_bh adjusts [.01,.02,.03,.04,.05] to .05 everywhere
    assert benjamini_hochberg([0.01, 0.02, 0.03, 0.04, 0.05], 0.05) == [True] * 5
    assert benjamini_hochberg([0.01, 0.02, 0.03, 0.04, 0.05], 0.049) == [False] * 5
    # ties are rejected together
    assert benjamini_hochberg([0.01, 0.01, 0.5], 0.05) == [True, True, False]


@pytest.mark.parametrize("correction", [holm, benjamini_hochberg])
def test_corrections_reject_bad_input(correction: object) -> None:
    assert callable(correction)
    with pytest.raises(ValueError, match="NaN"):
        correction([0.01, float("nan")], 0.05)
    with pytest.raises(ValueError, match="empty"):
        correction([], 0.05)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        correction([0.01, 1.5], 0.05)
    with pytest.raises(ValueError, match="one-dimensional"):
        correction([[0.01, 0.02]], 0.05)
    for level in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            correction([0.01], level)


def test_conformal_p_values_by_hand() -> None:
    p = conformal_p_values([3.0, 1.0, 4.0, 2.0], [0.0, 2.5, 4.0, 5.0, 2.0])
    # at least as large: 4, 2, 1, 0 and 3 (ties count)
    np.testing.assert_allclose(p, [5 / 5, 3 / 5, 2 / 5, 1 / 5, 4 / 5])
    assert conformal_p_values([1.0], []).shape == (0,)
    with pytest.raises(ValueError, match="calibration_scores is empty"):
        conformal_p_values([], [1.0])
    with pytest.raises(ValueError, match="test_scores contains NaN"):
        conformal_p_values([1.0], [float("nan")])
    with pytest.raises(ValueError, match="calibration_scores contains NaN"):
        conformal_p_values([float("nan")], [1.0])


@pytest.mark.parametrize("discrete", [False, True])
def test_conformal_p_values_are_super_uniform(discrete: bool) -> None:
    # 2,000 exchangeable draws of 19 calibration scores and one test score: P(p ≤ 0.1) is exactly
    # 2/20 for continuous scores and at most that with ties
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 4, size=(2000, 20)) if discrete else rng.normal(size=(2000, 20))
    p = np.array([conformal_p_values(row[:19], row[19:])[0] for row in draws.astype(float)])
    margin = 3 * math.sqrt(0.1 * 0.9 / 2000)
    assert np.mean(p <= 0.1) <= 0.1 + margin
    assert np.mean(p <= 0.5) <= 0.5 + 3 * math.sqrt(0.25 / 2000)
    if not discrete:
        assert np.mean(p <= 0.1) >= 0.1 - margin


# --- relevance ---------------------------------------------------------------------------------


def test_relevance_is_row_wise_cosine() -> None:
    prompts = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    responses = np.array([[2.0, 0.0], [4.0, -3.0], [1.0, 0.0]])
    r = relevance(prompts, responses)
    np.testing.assert_allclose(r[:2], [1.0, 0.0], atol=1e-7)
    assert np.isnan(r[2])  # a zero vector has no direction
    with pytest.raises(ValueError, match="differ in shape"):
        relevance(prompts, responses[:2])
    with pytest.raises(ValueError, match="NaN"):
        relevance([[np.nan, 1.0]], [[1.0, 1.0]])


def test_relevance_threshold_finite_sample_rate() -> None:
    # k = ⌊0.1 · 20⌋ = 2nd smallest of 19: a fresh exchangeable value falls below it w.p. 2/20
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(2000, 20))
    below = [row[19] < relevance_threshold(row[:19], quantile=0.1) for row in draws]
    assert abs(np.mean(below) - 0.1) <= 3 * math.sqrt(0.1 * 0.9 / 2000)
    assert relevance_threshold([0.5, np.nan] * 120, quantile=0.01) == 0.5
    assert relevance_threshold(np.linspace(0, 1, 199), quantile=0.01, floor=0.3) == 0.3
    with pytest.raises(ValueError, match="needs at least 99"):
        relevance_threshold(np.ones(98), quantile=0.01)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        relevance_threshold(np.ones(500), quantile=1.0)


def _off_topic_pairs(corpus: Corpus, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt with the response of a random row from another section."""
    rng = np.random.default_rng(seed)
    partners = rng.permutation(rows)
    other = corpus.sections[rows] != corpus.sections[partners]
    return rows[other], partners[other]


def test_calibrated_relevance_flags_off_topic_answers(corpus: Corpus) -> None:
    rows = np.random.default_rng(1).permutation(len(corpus.prompts))
    reference, window = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    threshold = relevance_threshold(
        relevance(corpus.prompt_vectors[reference], corpus.response_vectors[reference])
    )
    genuine = relevance(corpus.prompt_vectors[window], corpus.response_vectors[window])
    prompts, responses = _off_topic_pairs(corpus, window, seed=2)
    off_topic = relevance(corpus.prompt_vectors[prompts], corpus.response_vectors[responses])

    assert threshold < DEFAULT_RELEVANCE_THRESHOLD  # short prompts, long answers: see flags.py
    assert np.mean(genuine < threshold) <= 0.03
    assert np.mean(off_topic < threshold) >= 0.95
    assert np.median(off_topic) < np.quantile(genuine, 0.01)

    flags = call_flags(relevance=np.r_[genuine, off_topic], relevance_threshold=threshold)
    flagged = np.array([any(f.reason == "low_relevance" for f in row) for row in flags])
    assert flagged[len(genuine) :].mean() >= 0.95 and flagged[: len(genuine)].mean() <= 0.03


# --- novelty -----------------------------------------------------------------------------------


def _topics(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    picked = centres[rng.integers(len(centres), size=n)]
    return picked + 0.4 * rng.normal(size=picked.shape)


def test_novelty_score_is_chunked_knn() -> None:
    rng = np.random.default_rng(0)
    reference, queries = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    scorer = NoveltyScorer(reference, k=3, calibration_fraction=0.5, chunk_bytes=4 * 30 * 2)
    unit = scorer.fit_vectors.astype(np.float64)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = 1 - np.sort(q @ unit.T, axis=1)[:, -3:].mean(axis=1)
    np.testing.assert_allclose(scorer.score(queries), expected, atol=1e-6)
    assert scorer.fit_vectors.shape == (30, 8) and scorer.calibration_scores.shape == (30,)
    assert scorer.flags(np.zeros((0, 8))).shape == (0,)


def test_novelty_p_values_are_valid_under_the_null() -> None:
    # fresh rows from the reference's distribution: P(p ≤ 0.1) ≈ ⌊0.1·251⌋/251 on average over
    # references. A calibration scored against itself or leave-one-out would break this.
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(4, 16))
    rates = []
    for seed in range(5):
        scorer = NoveltyScorer(_topics(rng, centres, 500), k=10, seed=seed)
        rates.append(np.mean(scorer.p_values(_topics(rng, centres, 2000)) <= 0.1))
    assert abs(np.mean(rates) - 25 / 251) <= 0.03


def test_novelty_bh_power_and_fdr_synthetic() -> None:
    # windows of 475 rows from four topics and 25 (5%) from a fifth; a fresh reference each time
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(5, 16))
    power, fdp = [], []
    for seed in range(30):
        scorer = NoveltyScorer(_topics(rng, centres[:4], 1000), k=10, seed=seed)
        window = np.vstack([_topics(rng, centres[:4], 475), _topics(rng, centres[4:], 25)])
        flags = scorer.flags(window, q=0.1)
        power.append(flags[475:].mean())
        fdp.append(flags[:475].sum() / max(flags.sum(), 1))
    assert np.mean(power) >= 0.95
    assert np.mean(fdp) <= 0.1 + 0.05


def test_novelty_flags_planted_topic_in_real_text(corpus: Corpus) -> None:
    # An app answering about databases, docs, fonts and Go; ~10% of a window turns to games.
    # Rows are prompt and response embeddings side by side. 10% rather than 5%: with 280
    # calibration rows the smallest p-value is 1/281, and BH at q = 0.1 needs the novel share
    # above ~1/(q·281) = 3.6% before it can flag anything at all.
    pairs = np.hstack([corpus.prompt_vectors, corpus.response_vectors])
    games = corpus.where("games")
    power, fdp, null_hits = [], [], 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        reference: list[int] = []
        normal: list[int] = []
        for section in ("database", "doc", "fonts", "golang"):
            rows = rng.permutation(corpus.where(section))
            reference.extend(rows[:100])
            normal.extend(rows[100:])
        planted = rng.choice(games, size=9, replace=False)
        scorer = NoveltyScorer(pairs[reference], k=10, calibration_fraction=0.7, seed=seed)
        flags = scorer.flags(np.vstack([pairs[normal], pairs[planted]]), q=0.1)
        power.append(flags[len(normal) :].mean())
        fdp.append(flags[: len(normal)].sum() / max(flags.sum(), 1))
        null_hits += bool(scorer.flags(pairs[normal], q=0.1).any())
    assert np.mean(power) >= 0.6
    assert np.mean(fdp) <= 0.1 + 0.05
    assert null_hits <= 4  # under the null BH flags anything in at most a fraction q of windows


def test_novelty_scorer_rejects_bad_input() -> None:
    reference = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(ValueError, match="calibration_fraction"):
        NoveltyScorer(reference, calibration_fraction=1.0)
    with pytest.raises(ValueError, match="needs at least k = 30"):
        NoveltyScorer(reference, k=30)
    with pytest.raises(ValueError, match="k must be at least 1"):
        NoveltyScorer(reference, k=0)
    with pytest.raises(ValueError, match="2-d"):
        NoveltyScorer(reference[0])
    scorer = NoveltyScorer(reference, k=5)
    with pytest.raises(ValueError, match="dimension 3, the reference 4"):
        scorer.score(reference[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        scorer.p_values(np.full((1, 4), np.nan))


# --- operational -------------------------------------------------------------------------------


def test_robust_z_flags_a_tenfold_latency() -> None:
    rng = np.random.default_rng(2)
    reference = rng.lognormal(np.log(800), 0.25, size=1000)  # milliseconds
    window = rng.lognormal(np.log(800), 0.25, size=200)
    window[17] = 10 * np.median(reference)
    z = robust_z(reference, window)
    assert z[17] > 20 and int(np.argmax(z)) == 17
    assert np.sum(z > 4.0) <= 3
    flags = call_flags(latency_z=z)
    assert flags[17] == [Flag("latency", float(z[17]), 4.0, f"latency robust z {z[17]:.1f} > 4")]


def test_robust_z_when_the_mad_is_zero() -> None:
    # six of eight at the median: MAD 0, mean absolute deviation 4/8, scale sqrt(pi/2) · 0.5
    mostly = [100.0] * 6 + [102.0, 102.0]
    np.testing.assert_allclose(robust_z(mostly, [100.0, 105.0]), [0.0, 5 / (0.5 * 1.2533)], 1e-4)
    np.testing.assert_allclose(robust_z([100.0] * 5, [100.0, 103.0]), [0.0, 3.0])  # 1% of median
    z = robust_z([0.0] * 5, [0.0, 0.01])
    assert z[0] == 0 and z[1] > 1e6 and np.isfinite(z[1])
    assert np.isnan(robust_z([1.0, 2.0, np.nan], [np.nan])[0])
    with pytest.raises(ValueError, match="no values"):
        robust_z([np.nan], [1.0])


def test_truncated_empty_and_refusal() -> None:
    for reasons in (["length"], ["max_tokens"], ["MAX_TOKENS"], ["max_output_tokens"], "length"):
        assert is_truncated(reasons), reasons
    assert is_truncated(["stop", "length"])
    for reasons in ([], ["stop"], ["end_turn"], ["content_filter"], ["tool_calls"], "stop", [""]):
        assert not is_truncated(reasons), reasons

    for text in (None, "", "   ", "\n\t ", "\u200b", " \ufeff\n"):
        assert is_empty(text), repr(text)
    for text in ("a", " . ", "0"):
        assert not is_empty(text)

    refusals = [
        "I can't help with that.",
        "I can\u2019t help with that request.",
        "I'm sorry, but I cannot assist with that.",
        "I am sorry, I can't do that.",
        "As an AI language model, I cannot browse the internet.",
        "I am unable to provide medical advice.",
        "I won't be able to help with this one.",
        "Sorry, but I can't share that.",
        "**I apologize, but I cannot** fulfil this request.",
        "Great question! Unfortunately, I cannot discuss that.",
        "I must decline this request.",
    ]
    for text in refusals:
        assert is_refusal(text), text
    helpful = [
        "To install it, run `apt install foo`. Note that it cannot read compressed files.",
        "The tool cannot handle UTF-16; convert the file first.",
        "I can help with that! First, open the settings.",
        "I am unable to reproduce the crash, but the patch below should fix it.",
        "I cannot recommend this library enough: it is fast and small.",
        "Here is the answer.\n\n" + "Step by step. " * 40 + "I can't help with the last part.",
        "",
    ]
    for text in helpful:
        assert not is_refusal(text), text
    assert refusal_phrase("I'm sorry, but I can't help.") == "i'm sorry, but i can't"


# --- gathering ---------------------------------------------------------------------------------


def test_call_flags_gathers_reasons_per_call() -> None:
    novelty_p = np.full(20, 0.9)
    novelty_p[3] = 0.001
    errors: list[bool | str | None] = [None] * 20
    errors[5], errors[6] = "TimeoutError", True
    flags = call_flags(
        relevance=[0.9] * 19 + [0.2],
        relevance_threshold=0.5,
        novelty_p_values=novelty_p,
        latency_z=[0.0] * 20,
        tokens_z=[0.0] * 2 + [9.0] + [0.0] * 17,
        cost_z=[0.0] * 2 + [7.5] + [0.0] * 17,
        errors=errors,
        finish_reasons=[["stop"]] * 7 + [["length"], None] + [["stop"]] * 11,
        outputs=["Fine."] * 8 + ["  ", "I'm sorry, but I can't help with that."] + ["Ok."] * 10,
    )
    reasons = {i: [f.reason for f in row] for i, row in enumerate(flags) if row}
    assert reasons == {
        2: ["tokens", "cost"],
        3: ["novel"],
        5: ["error"],
        6: ["error"],
        7: ["truncated"],
        8: ["empty"],
        9: ["refusal"],
        19: ["low_relevance"],
    }
    assert flags[3][0] == Flag("novel", 0.001, 0.1 / 20, flags[3][0].detail)
    assert flags[5][0].detail == "TimeoutError"
    assert flags[19][0].score == 0.2 and flags[19][0].threshold == 0.5
    assert {r for row in reasons.values() for r in row} <= set(REASONS)
    assert call_flags(outputs=[]) == []


def test_call_flags_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        call_flags(relevance=[0.5, 0.6], outputs=["a"])
    with pytest.raises(ValueError, match="at least one"):
        call_flags()
