"""Multiple testing: Holm on separate p-values (the baseline the joint test is measured against),
Benjamini-Hochberg across a window's outputs, and
conformal p-values that turn novelty scores into something BH can select from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["benjamini_hochberg", "conformal_p_values", "holm"]


def _level(value: float, name: str) -> float:
    level = float(value)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return level


def _p_values(p_values: npt.ArrayLike) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("p_values is empty")
    if np.isnan(p).any():
        raise ValueError(f"p_values contains NaN at positions {np.flatnonzero(np.isnan(p))[:10]}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("p_values must lie in [0, 1]")
    return p


def holm(p_values: npt.ArrayLike, alpha: float) -> list[bool]:
    """Holm-Bonferroni step-down: which hypotheses to reject with family-wise error ≤ `alpha`.

    With the p-values sorted ascending, p_(i) is rejected while p_(i) · (m - i + 1) ≤ alpha for it
    and for every smaller one; the first that fails stops the walk. Flags come back in input order.
    """
    level = _level(alpha, "alpha")
    p = _p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    # Multiplying (as statsmodels' adjusted p-values do) rather than dividing alpha keeps exact
    # boundary cases such as p = 0.01, m = 5, alpha = 0.05 on the rejecting side.
    passes = p[order] * np.arange(m, 0, -1) <= level
    n_rejected = m if passes.all() else int(np.argmin(passes))
    reject = np.zeros(m, dtype=bool)
    reject[order[:n_rejected]] = True
    return reject.tolist()


def benjamini_hochberg(p_values: npt.ArrayLike, q: float) -> list[bool]:
    """Benjamini-Hochberg step-up: reject the k smallest p-values, k the largest i with
    p_(i) · m / i ≤ q. Controls the false discovery rate at q for independent or positively
    dependent (PRDS) p-values, which includes conformal p-values sharing one calibration set."""
    level = _level(q, "q")
    p = _p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    passes = p[order] * m <= level * np.arange(1, m + 1)
    hits = np.flatnonzero(passes)
    n_rejected = int(hits[-1]) + 1 if hits.size else 0
    reject = np.zeros(m, dtype=bool)
    reject[order[:n_rejected]] = True
    return reject.tolist()


def conformal_p_values(calibration_scores: npt.ArrayLike, test_scores: npt.ArrayLike) -> np.ndarray:
    """p = (1 + #{calibration ≥ score}) / (n_cal + 1) for each test score (higher = stranger).

    If a test score is exchangeable with the calibration scores, P(p ≤ t) ≤ t for every t: the
    p-value is super-uniform, ties included. An empty `test_scores` gives an empty array.
    """
    calibration = np.asarray(calibration_scores, dtype=np.float64)
    test = np.asarray(test_scores, dtype=np.float64)
    if calibration.ndim != 1 or test.ndim != 1:
        raise ValueError(
            f"scores must be one-dimensional, got shapes {calibration.shape} and {test.shape}"
        )
    if calibration.size == 0:
        raise ValueError("calibration_scores is empty")
    if np.isnan(calibration).any():
        raise ValueError("calibration_scores contains NaN")
    if np.isnan(test).any():
        raise ValueError("test_scores contains NaN")
    ordered = np.sort(calibration)
    at_least = ordered.size - np.searchsorted(ordered, test, side="left")
    return (1.0 + at_least) / (ordered.size + 1.0)
