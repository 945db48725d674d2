"""Centroid drift test: cosine distance between the windows' mean embeddings, permutation null.

With the pooled sample Z = (X, Y) of N = n + m rows and an N-by-B indicator matrix A whose
columns mark which rows play X in each random split, the column sums of X for every split are
the rows of AᵀZ, and those of Y are 1ᵀZ minus them: all B permutations are one matrix product.
"""

from __future__ import annotations

from typing import Any

import torch

from .result import TwoSampleResult
from .tensors import (
    ArrayLike,
    check_windows,
    cosine_distance,
    permutation_p_value,
    pick_device,
    randperm,
)

__all__ = ["centroid_distances", "centroid_result", "centroid_test"]

_CPU_CHUNK_BYTES = 256 * 2**20
_CUDA_CHUNK_BYTES = 2 * 2**30


def centroid_test(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    permutations: int = 500,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> TwoSampleResult:
    """Test whether the mean embedding of `current` points where that of `reference` does.

    Statistic: cosine distance 1 - cos(x̄, ȳ) between the two windows' mean vectors.
    p-value: (1 + #{permuted distance ≥ observed}) / (permutations + 1), over random splits of
    the pooled rows into windows of the same sizes.
    effect_size: the cosine distance itself; it is already scale-free (0 = same direction,
    1 = orthogonal means, 2 = opposite). Runs on CUDA when torch sees it, unless `device` says
    otherwise.
    """
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    dev = pick_device(device)
    x, y = check_windows(reference, current, min_rows=2, device=dev, test="centroid")
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    big_n = n + m
    total = z.sum(0, dtype=torch.float64)

    # Splits are drawn where the test runs, as in mmd_test. The observed split is scored in the
    # same product as the permuted ones, so equal splits round alike and tie rather than beat it.
    perm_gen = torch.Generator(device=dev).manual_seed(seed)
    budget = _CUDA_CHUNK_BYTES if dev.type == "cuda" else _CPU_CHUNK_BYTES
    chunk = max(1, budget // (12 * big_n))  # the indicators in float32 and a shuffle in int64
    stats = []
    for start in range(0, permutations + 1, chunk):
        picks = torch.stack(
            [
                torch.arange(n, device=dev) if i == 0 else randperm(big_n, perm_gen, dev)[:n]
                for i in range(start, min(start + chunk, permutations + 1))
            ]
        )
        a = torch.zeros(picks.shape[0], big_n, dtype=torch.float32, device=dev)
        a.scatter_(1, picks, 1.0)
        stats.append(centroid_distances(z, total, a))
        del picks, a
    return centroid_result(torch.cat(stats), sizes=(n, m), device=dev, seed=seed)


def centroid_distances(z: torch.Tensor, total: torch.Tensor, x_rows: torch.Tensor) -> torch.Tensor:
    """Cosine distance between the means of X and Y for every split of the rows of `z`.

    `x_rows` is an (S, N) float32 0/1 matrix whose rows mark the rows of `z` that play X;
    `total` is z's column sums in float64. Returns (S,) float64 distances.
    """
    sums_x = (x_rows @ z).double()
    return cosine_distance(sums_x, total - sums_x)


def centroid_result(
    null: torch.Tensor, *, sizes: tuple[int, int], device: torch.device, seed: int
) -> TwoSampleResult:
    """The test's answer from the distance of the observed split (entry 0) and the permuted ones."""
    observed = float(null[0])
    p_value, exceed = permutation_p_value(observed, null[1:])
    details: dict[str, Any] = {
        "permutations": len(null) - 1,
        "exceedances": exceed,
        "device": str(device),
        "seed": seed,
    }
    return TwoSampleResult(
        test="centroid",
        statistic=observed,
        effect_size=observed,
        p_value=p_value,
        n_reference=sizes[0],
        n_current=sizes[1],
        details=details,
    )
