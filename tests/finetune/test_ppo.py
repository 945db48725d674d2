"""PPO's pieces against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from driftline.finetune.ppo import (
    AdaptiveKL,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_by_hand() -> None:
    # gamma = 0.9, lambda = 0.5, rewards [0, 0, 1], values [0.5, 0.6, 0.7], nothing after the end:
    # delta2 = 1 - 0.7 = 0.3;            A2 = 0.3
    # delta1 = 0 + 0.9*0.7 - 0.6 = 0.03;  A1 = 0.03 + 0.45*0.3 = 0.165
    # delta0 = 0 + 0.9*0.6 - 0.5 = 0.04;  A0 = 0.04 + 0.45*0.165 = 0.11425
    advantages, returns = gae(t([0, 0, 1]), t([0.5, 0.6, 0.7]), t([1, 1, 1]), 0.9, 0.5)
    assert advantages.tolist()[0] == pytest.approx([0.11425, 0.165, 0.3])
    assert returns.tolist()[0] == pytest.approx([0.61425, 0.765, 1.0])


def test_gae_ignores_padding() -> None:
    padded, _ = gae(t([0, 1, 5]), t([0.2, 0.4, 9]), t([1, 1, 0]), 1.0, 1.0)
    alone, _ = gae(t([0, 1]), t([0.2, 0.4]), t([1, 1]), 1.0, 1.0)
    assert padded.tolist()[0] == pytest.approx([*alone.tolist()[0], 0.0])
    # gamma = lambda = 1: A_t = (sum of rewards from t) - V_t
    assert alone.tolist()[0] == pytest.approx([1 - 0.2, 1 - 0.4])


def test_clipped_policy_loss_by_hand() -> None:
    # ratios e^0.5 ~ 1.6487 (advantage +1: clipped to 1.2) and e^-0.5 ~ 0.6065 (advantage -1:
    # clipped to 0.8, the pessimistic max keeps -(-1)*0.8 = 0.8); loss = mean(-1.2, 0.8) = -0.2
    loss, clipped = clipped_policy_loss(
        t([0.5, -0.5]), t([0.0, 0.0]), t([1.0, -1.0]), t([1, 1]), clip=0.2
    )
    assert loss.item() == pytest.approx(-0.2)
    assert clipped.item() == pytest.approx(1.0)
    # inside the clip range nothing is clipped: loss = -A*ratio
    loss, clipped = clipped_policy_loss(t([0.1]), t([0.0]), t([2.0]), t([1]), clip=0.2)
    assert loss.item() == pytest.approx(-2 * math.exp(0.1))
    assert clipped.item() == 0.0


def test_clipped_value_loss_by_hand() -> None:
    # V = 2 moved from 1 (clipped to 1.2), return 3: max((2-3)^2, (1.2-3)^2) = 3.24; half = 1.62
    assert clipped_value_loss(t([2.0]), t([1.0]), t([3.0]), t([1])).item() == pytest.approx(1.62)
    # V = 2.9 near the return: max(0.01, (1.2-3)^2) still the clipped one
    assert clipped_value_loss(t([2.9]), t([1.0]), t([3.0]), t([1])).item() == pytest.approx(1.62)


def test_kl_rewards_put_the_score_on_the_last_token() -> None:
    rewards, kl = kl_penalised_rewards(
        scores=torch.tensor([2.0], dtype=torch.float64),
        logprobs=t([-1.0, -2.0, -3.0]),
        ref_logprobs=t([-1.5, -2.0, -9.0]),
        mask=t([1, 1, 0]),
        kl_coef=0.1,
    )
    # per-token KL (0.5, 0, padding): rewards -0.05, 0 + score 2 on the last real token
    assert rewards.tolist()[0] == pytest.approx([-0.05, 2.0, 0.0])
    assert kl.tolist() == pytest.approx([0.5])


def test_adaptive_kl_moves_towards_the_target() -> None:
    controller = AdaptiveKL(coef=0.2, target=6.0, horizon=1000)
    # KL 12 is 100% over target: the error is capped at +20%, scaled by 100/1000 samples
    assert controller.update(12.0, 100) == pytest.approx(0.2 * 1.02)
    # KL 3 is 50% under: capped at -20%, scaled: -2%
    assert controller.update(3.0, 100) == pytest.approx(0.2 * 1.02 * 0.98)


def test_masked_statistics() -> None:
    values, mask = t([1.0, 3.0, 100.0]), t([1, 1, 0])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    assert masked_whiten(values, mask).tolist()[0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)
