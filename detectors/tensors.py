"""Helpers the drift tests share: input checks, device choice, permutations, p-values."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_matrix(data: ArrayLike, device: torch.device, name: str) -> torch.Tensor:
    t = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-d array (rows are samples), got shape {tuple(t.shape)}"
        )
    return t.detach().to(device=device, dtype=torch.float32)


def check_windows(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    min_rows: int,
    device: torch.device,
    test: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both windows as float32 matrices on `device`, or a ValueError that names the problem."""
    x = as_matrix(reference, device, "reference")
    y = as_matrix(current, device, "current")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: reference has {x.shape[1]}, current {y.shape[1]}")
    for name, t in (("reference", x), ("current", y)):
        if t.shape[0] < min_rows:
            raise ValueError(
                f"{name} has {t.shape[0]} rows; "
                f"the {test} test needs at least {min_rows} per window"
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    return x, y


def randperm(size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.randperm(size, generator=generator, device=where).to(device)


def permutation_p_value(observed: float, null: torch.Tensor | np.ndarray) -> tuple[float, int]:
    """(1 + #{null ≥ observed}) / (len(null) + 1), and the count of exceedances."""
    exceed = int((torch.as_tensor(null) >= observed).sum())
    return (1 + exceed) / (len(null) + 1), exceed


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos between matching rows of `a` and `b`; a zero vector counts as cos 0."""
    dots = (a * b).sum(-1)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cos = torch.where(norms > 0, dots / norms.clamp(min=1e-300), torch.zeros_like(dots))
    return 1.0 - cos.clamp(-1.0, 1.0)
