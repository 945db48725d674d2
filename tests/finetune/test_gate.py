"""The eval gate's arithmetic against hand-worked values."""

from __future__ import annotations

import pytest

from driftline.finetune.gate.verdict import check_judge, verdict, win_rate


def test_wilson_interval_by_hand() -> None:
    # 70 wins of 100 at z = 1.96: centre (0.7 + 1.9208/100) / 1.038416 = 0.69261,
    # half 1.96 * sqrt(0.0021 + 0.000096040) / 1.038416 = 0.08846 -> [0.6042, 0.7811]
    wins = win_rate(70, 0, 30)
    assert wins.rate == 0.7
    assert (wins.low, wins.high) == (
        pytest.approx(0.6042, abs=1e-4),
        pytest.approx(0.7811, abs=1e-4),
    )
    assert win_rate(6, 2, 2).rate == 0.7  # a tie is half a win
    empty = win_rate(0, 0, 0)
    assert (empty.n, empty.low, empty.high) == (0, 0.0, 1.0)


def test_judge_is_trusted_only_when_it_ranks_like_people() -> None:
    humans = [1, 2, 3, 4, 5]
    assert check_judge([2, 3, 4, 5, 9], humans).trusted  # same order: rho = 1
    # one swap of neighbours in 5 items: rho = 1 - 6 * 2 / (5 * 24) = 0.9
    close = check_judge([1, 3, 2, 4, 5], humans)
    assert close.spearman == pytest.approx(0.9) and close.trusted
    # two swaps: rho = 1 - 6 * 4 / 120 = 0.8, not above the 0.8 bar
    edge = check_judge([2, 1, 3, 5, 4], humans)
    assert edge.spearman == pytest.approx(0.8) and not edge.trusted
    flat = check_judge([3, 3, 3, 3, 3], humans)
    assert flat.spearman is None and not flat.trusted
    with pytest.raises(ValueError, match="4 judge scores for 5 human scores"):
        check_judge([1, 2, 3, 4], humans)


def test_verdict() -> None:
    before = {"accuracy": 4.0, "safety": 4.5}
    good = verdict(win_rate(70, 0, 30), before, {"accuracy": 4.2, "safety": 4.4})
    assert good.promote and good.reasons == []
    # safety falls 4.5 -> 4.2: 6.7% > 5%; the win rate is fine
    unsafe = verdict(win_rate(70, 0, 30), before, {"accuracy": 4.2, "safety": 4.2})
    assert not unsafe.promote
    assert unsafe.reasons == ["safety falls 6.7% (4.50 to 4.20), more than 5%"]
    weak = verdict(win_rate(55, 0, 45), before, before)
    assert not weak.promote and weak.reasons[0].startswith("win rate 55.0% (95% CI")
    assert verdict(win_rate(0, 0, 0), {}, {}).reasons == ["no held-out comparisons"]
