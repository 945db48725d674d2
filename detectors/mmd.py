"""Kernel two-sample test: unbiased MMD² with a multi-bandwidth RBF kernel and a permutation null.

All permutations are scored together. With the pooled sample Z = (X, Y) of N = n + m rows, a
zero-diagonal kernel matrix K, and an indicator a ∈ {0, 1}^N marking which rows play X (b = 1 - a),

    MMD²_u = aᵀKa / (n(n-1)) + bᵀKb / (m(m-1)) - 2 aᵀKb / (nm).

With r = K1, T = 1ᵀK1, q = aᵀKa and s = aᵀr this is

    MMD²_u = q / (n(n-1)) + (T - 2s + q) / (m(m-1)) - 2 (s - q) / (nm),

so every permutation needs only q and s. With the observed split and the B permuted splits as the
columns of an N-by-(B+1) indicator matrix A, all the q are the column-wise dots of A with K A: one
matrix product, computed strip by strip over K's upper triangle so that K is never held whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .result import TwoSampleResult
from .tensors import ArrayLike, as_matrix, permutation_p_value, pick_device, randperm

__all__ = ["indicator_mmd2", "median_distance", "mmd_test", "split_mmd2"]


BANDWIDTH_SCALES = (0.5, 1.0, 2.0)
_BANDWIDTH_SAMPLE = 1000  # rows of the pooled sample used to estimate the median distance
_CPU_CHUNK_BYTES = 256 * 2**20
_CUDA_CHUNK_BYTES = 2 * 2**30


def mmd_test(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    permutations: int = 500,
    bandwidth_scales: Sequence[float] = BANDWIDTH_SCALES,
    max_samples: int | None = 20_000,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_bytes: int | None = None,
) -> TwoSampleResult:
    """Test whether `current` comes from the distribution of `reference` (rows are samples).

    Statistic: unbiased MMD² under the mean of RBF kernels exp(-‖x-y‖² / (2h²)) with bandwidths
    h = (median pairwise distance of the pooled sample) * (each of `bandwidth_scales`).
    p-value: (1 + #{permuted MMD² ≥ observed}) / (permutations + 1); the smallest possible p is
    therefore 1 / (permutations + 1).
    effect_size: max(MMD², 0) / (k̄_XX + k̄_YY), with k̄ the mean within-sample kernel value
    (off-diagonal). It is ‖μ_X - μ_Y‖² / (‖μ_X‖² + ‖μ_Y‖²) for the kernel mean embeddings μ: 0 when
    the windows look alike, 1 when their mean embeddings are orthogonal (the kernel is positive).
    A side with more than `max_samples` rows is subsampled (seeded) to that many
    (None: never). Runs on CUDA when torch sees it, unless `device` says otherwise.
    """
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    if not bandwidth_scales or any(s <= 0 for s in bandwidth_scales):
        raise ValueError("bandwidth_scales must be positive")
    dev = pick_device(device)
    x = as_matrix(reference, dev, "reference")
    y = as_matrix(current, dev, "current")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    n_total, m_total = x.shape[0], y.shape[0]
    if min(n_total, m_total) < 2:
        raise ValueError("each window needs at least 2 rows")
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())):
        raise ValueError("inputs contain NaN or infinite values")

    gen = torch.Generator().manual_seed(seed)
    subsampled = False
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError("max_samples must be at least 2")
        if n_total > max_samples:
            x = x[randperm(n_total, gen, dev)[:max_samples]]
            subsampled = True
        if m_total > max_samples:
            y = y[randperm(m_total, gen, dev)[:max_samples]]
            subsampled = True
    z = torch.cat([x, y])
    n, m = x.shape[0], y.shape[0]

    median = median_distance(z, generator=gen)
    bandwidths = [median * float(s) for s in bandwidth_scales]
    # Splits are drawn where the test runs: on a GPU, 500 CPU shuffles of 40,000 rows and their
    # transfer would cost more than the test. So a seed repeats a result on the same kind of device.
    perm_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    big_n = n + m
    splits = torch.stack(
        [torch.arange(n, device=dev)]
        + [randperm(big_n, perm_gen, dev)[:n] for _ in range(permutations)]
    )
    stats, within_x, within_y = split_mmd2(z, splits, bandwidths, chunk_bytes=chunk_bytes)
    return mmd_result(
        stats,
        within_x,
        within_y,
        bandwidths=bandwidths,
        bandwidth_scales=bandwidth_scales,
        median=median,
        sizes=(n, m),
        total_sizes=(n_total, m_total),
        subsampled=subsampled,
        device=dev,
        seed=seed,
    )


def mmd_result(
    stats: np.ndarray,
    within_x: np.ndarray,
    within_y: np.ndarray,
    *,
    bandwidths: Sequence[float],
    bandwidth_scales: Sequence[float],
    median: float,
    sizes: tuple[int, int],
    total_sizes: tuple[int, int],
    subsampled: bool,
    device: torch.device,
    seed: int,
) -> TwoSampleResult:
    """The test's answer from the MMD² of the observed split (entry 0) and of the permuted ones."""
    within = (float(within_x[0]), float(within_y[0]))
    observed = float(stats[0])
    p_value, exceed = permutation_p_value(observed, stats[1:])
    scale = within[0] + within[1]
    effect = max(observed, 0.0) / scale if scale > 0 else 0.0
    details: dict[str, Any] = {
        "bandwidths": list(bandwidths),
        "bandwidth_scales": [float(s) for s in bandwidth_scales],
        "median_distance": median,
        "permutations": len(stats) - 1,
        "exceedances": exceed,
        "mean_kernel_reference": within[0],
        "mean_kernel_current": within[1],
        "mmd": math.sqrt(max(observed, 0.0)),
        "subsampled": subsampled,
        "n_reference_total": total_sizes[0],
        "n_current_total": total_sizes[1],
        "device": str(device),
        "seed": seed,
    }
    return TwoSampleResult(
        test="mmd",
        statistic=observed,
        effect_size=effect,
        p_value=p_value,
        n_reference=sizes[0],
        n_current=sizes[1],
        details=details,
    )


def median_distance(
    z: torch.Tensor, *, sample: int = _BANDWIDTH_SAMPLE, generator: torch.Generator | None = None
) -> float:
    """Median (lower middle) Euclidean distance between distinct rows of `z`.

    Estimated on a seeded subsample of `sample` rows when `z` has more.
    """
    if z.shape[0] > sample:
        z = z[randperm(z.shape[0], generator, z.device)[:sample]]
    d2 = _squared_distances(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    dist = d2[iu[0], iu[1]].double().sqrt()
    med = float(dist.median()) if dist.numel() else 0.0
    if med <= 0.0:  # more than half the pairs coincide: fall back so the kernel stays defined
        mean = float(dist.mean()) if dist.numel() else 0.0
        med = mean if mean > 0.0 else 1.0
    return med


def split_mmd2(
    z: torch.Tensor,
    splits: torch.Tensor,
    bandwidths: Sequence[float],
    *,
    chunk_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unbiased MMD² of every split of the rows of `z` into X = z[split] and Y = the other rows.

    `splits` is a (S, n) integer tensor: each row holds the n distinct row indices that play X.
    The kernel is the mean of exp(-d² / (2h²)) over the bandwidths h. Returns three (S,) float64
    arrays: MMD², and the mean within-sample kernel values of X and of Y (off-diagonal).
    """
    big_n = z.shape[0]
    count, n = splits.shape
    if n < 2 or big_n - n < 2:
        raise ValueError("each side of a split needs at least 2 rows")
    at = torch.zeros(big_n, count, dtype=torch.float32, device=z.device)
    at.scatter_(0, splits.to(z.device).T, 1.0)
    return _mmd2_of_columns(z, at, n, bandwidths, chunk_bytes)


def indicator_mmd2(
    z: torch.Tensor,
    x_rows: torch.Tensor,
    bandwidths: Sequence[float],
    *,
    chunk_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`split_mmd2` with the splits given as the columns of an (N, S) 0/1 (or boolean) matrix.

    Column j marks the rows of `z` that play X in split j; every column must mark the same
    number of rows. Returns what `split_mmd2` returns.
    """
    if x_rows.ndim != 2 or x_rows.shape[0] != z.shape[0]:
        raise ValueError(f"x_rows must have shape ({z.shape[0]}, S), got {tuple(x_rows.shape)}")
    at = x_rows.to(device=z.device, dtype=torch.float32)
    counts = at.sum(0)
    n = int(counts[0]) if counts.numel() else 0
    if not bool((counts == n).all()):
        raise ValueError("every column of x_rows must mark the same number of rows")
    if n < 2 or z.shape[0] - n < 2:
        raise ValueError("each side of a split needs at least 2 rows")
    return _mmd2_of_columns(z, at, n, bandwidths, chunk_bytes)


def _mmd2_of_columns(
    z: torch.Tensor,
    at: torch.Tensor,
    n: int,
    bandwidths: Sequence[float],
    chunk_bytes: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMD² and within-sample kernel means for the splits marked by the columns of `at`."""
    big_n, count = at.shape
    m = big_n - n
    dev = z.device
    gammas = [1.0 / (2.0 * h * h) for h in bandwidths]
    # MMD²_u is unchanged when a constant is added to every off-diagonal kernel entry (each of its
    # three terms is a mean over off-diagonal pairs). Subtracting the typical kernel value keeps the
    # float32 sums small, so the difference of large sums that MMD² is loses little precision.
    offset = _mean_offdiag_kernel(z, gammas)

    budget = chunk_bytes or (_CUDA_CHUNK_BYTES if dev.type == "cuda" else _CPU_CHUNK_BYTES)
    rows = max(1, min(big_n, budget // (4 * big_n * 3)))
    q = torch.zeros(count, dtype=torch.float64, device=dev)
    s = torch.zeros(count, dtype=torch.float64, device=dev)
    r = torch.zeros(big_n, dtype=torch.float64, device=dev)
    for start in range(0, big_n, rows):
        stop = min(start + rows, big_n)
        strip = _kernel(z[start:stop], z[start:], gammas)  # the upper-triangle strip of K
        strip -= offset
        strip.fill_diagonal_(0.0)
        r[start:stop] += strip.sum(1).double()
        r[stop:] += strip[:, stop - start :].sum(0).double()
        s += at[start:stop].T.double() @ r[start:stop]  # r[start:stop] is complete from here on
        # aᵀKa counts each off-diagonal block twice and the diagonal block once.
        strip[:, : stop - start] *= 0.5
        prod = strip @ at[start:]
        q += 2.0 * (prod.double() * at[start:stop]).sum(0)
        del strip, prod

    total = r.sum()
    qy = total - 2.0 * s + q
    mmd2 = q / (n * (n - 1)) + qy / (m * (m - 1)) - 2.0 * (s - q) / (n * m)
    within_x = q / (n * (n - 1)) + offset
    within_y = qy / (m * (m - 1)) + offset
    return mmd2.cpu().numpy(), within_x.cpu().numpy(), within_y.cpu().numpy()


def _kernel(x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float]) -> torch.Tensor:
    d2 = _squared_distances(x, y)
    if len(gammas) == 1:
        return d2.mul_(-gammas[0]).exp_()
    out = torch.mul(d2, -gammas[0]).exp_()
    for g in gammas[1:-1]:
        out += torch.mul(d2, -g).exp_()
    out += d2.mul_(-gammas[-1]).exp_()
    return out.div_(len(gammas))


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d2 = x @ y.T
    d2.mul_(-2.0).add_((x * x).sum(1, keepdim=True)).add_((y * y).sum(1))
    return d2.clamp_(min=0.0)


def _mean_offdiag_kernel(z: torch.Tensor, gammas: Sequence[float]) -> float:
    if z.shape[0] > _BANDWIDTH_SAMPLE:  # evenly spaced rows: the value only sets a numeric offset
        z = z[torch.linspace(0, z.shape[0] - 1, _BANDWIDTH_SAMPLE, device=z.device).long()]
    k = _kernel(z, z, gammas).double()
    size = z.shape[0]
    return float((k.sum() - k.diagonal().sum()) / (size * (size - 1)))
