"""Agreement and reviewer bias against published worked examples and hand-computed figures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from driftline.review.agreement import (
    CriterionAgreement,
    Rating,
    ReviewerBias,
    agreement,
    reviewer_bias,
)

Value = float | str | bool

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5, None = missing. Published: nominal .743, ordinal .815, interval .849;
# unit 12 has a single value, so 11 units and n.. = 40 pairable values.
KRIPPENDORFF_2011: dict[str, list[int | None]] = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories; each row is
# how many raters put the subject in categories 1..5. Published: P = 0.378, Pe = 0.213, k = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def krippendorff_ratings(as_label: bool) -> list[Rating]:
    """The 2011 example as ratings; as strings, so they are nominal labels."""
    return [
        Rating(f"u{unit}", coder, "c", str(value) if as_label else value)
        for coder, values in KRIPPENDORFF_2011.items()
        for unit, value in enumerate(values, start=1)
        if value is not None
    ]


def fleiss_ratings() -> list[Rating]:
    """The Wikipedia table as ratings; within a subject the raters are r0..r13."""
    ratings = []
    for subject, row in enumerate(FLEISS_WIKIPEDIA):
        categories = [str(c) for c, count in enumerate(row, start=1) for _ in range(count)]
        ratings += [Rating(f"s{subject}", f"r{r}", "label", c) for r, c in enumerate(categories)]
    return ratings


def pairs(criterion: str, first: Sequence[Value], second: Sequence[Value]) -> list[Rating]:
    """Two reviewers, a and b, rating items i0, i1, ... in order."""
    return [
        Rating(f"i{i}", reviewer, criterion, value)
        for reviewer, values in (("a", first), ("b", second))
        for i, value in enumerate(values)
    ]


def only(ratings: list[Rating], level: str = "interval") -> CriterionAgreement:
    (result,) = agreement(ratings, level)
    return result


def test_krippendorff_interval_matches_the_paper() -> None:
    result = only(krippendorff_ratings(as_label=False))
    assert result.kind == "score"
    assert result.alpha == pytest.approx(0.849, abs=5e-4)
    assert (result.items, result.reviewers, result.ratings) == (11, 4, 40)
    assert result.cohen_kappa is None
    assert result.fleiss_kappa is None
    assert result.fleiss_items == 0


def test_krippendorff_ordinal_level_matches_the_paper() -> None:
    result = only(krippendorff_ratings(as_label=False), level="ordinal")
    assert result.alpha == pytest.approx(0.815, abs=5e-4)


def test_labels_use_nominal_alpha_and_fleiss_on_the_modal_rater_count() -> None:
    result = only(krippendorff_ratings(as_label=True), level="interval")
    assert result.kind == "label"
    assert result.alpha == pytest.approx(0.743, abs=5e-4)
    assert result.cohen_kappa is None  # four reviewers
    # Units have 3, 4 x8, 3, 2 values: Fleiss takes the 8 units (2-9) with four.
    # By hand: P_i = 1/2, 1, 1, 1, 0, 1, 1/2, 1 -> P = 6/8; category totals 4, 13, 10, 5 of 32
    # -> Pe = (16 + 169 + 100 + 25) / 1024 = 310/1024; k = (6/8 - 310/1024) / (1 - 310/1024)
    # = 458/714 = 229/357.
    assert result.fleiss_items == 8
    assert result.fleiss_kappa == pytest.approx(229 / 357)


def test_fleiss_matches_the_wikipedia_example() -> None:
    result = only(fleiss_ratings())
    assert result.fleiss_kappa == pytest.approx(0.210, abs=5e-4)
    assert (result.items, result.reviewers, result.ratings) == (10, 14, 140)
    assert result.fleiss_items == 10
    assert result.cohen_kappa is None


def test_cohen_kappa_two_reviewers_by_hand() -> None:
    # a: 6 yes, 4 no; b: 5 yes, 5 no. Agree on items 0-3 (yes) and 7-9 (no): p_o = 7/10.
    # p_e = P(yes)a * P(yes)b + P(no)a * P(no)b = 0.6 * 0.5 + 0.4 * 0.5 = 0.5.
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a = ["yes"] * 6 + ["no"] * 4
    b = ["yes"] * 4 + ["no", "no", "yes"] + ["no"] * 3
    result = only(pairs("label", a, b))
    assert result.cohen_kappa == pytest.approx(0.4)
    # Fleiss with two raters is Scott's pi: pooled yes = 11/20, p_e = 0.55^2 + 0.45^2 = 0.505,
    # pi = (0.7 - 0.505) / (1 - 0.505) = 13/33.
    assert result.fleiss_kappa == pytest.approx(13 / 33)
    assert result.fleiss_items == 10
    # Nominal alpha: n.. = 20, 3 disagreeing units give 6 off-diagonal coincidences,
    # sum over c != k of n_c n_k = 2 * 11 * 9 = 198: alpha = 1 - 19 * 6 / 198 = 14/33.
    assert result.alpha == pytest.approx(14 / 33)
    assert (result.items, result.reviewers, result.ratings) == (10, 2, 20)


def test_booleans_are_labels() -> None:
    a = [True] * 6 + [False] * 4
    b = [True] * 4 + [False, False, True] + [False] * 3
    result = only(pairs("safe", a, b))
    assert result.kind == "label"
    assert result.cohen_kappa == pytest.approx(0.4)


def test_reviewer_one_point_above_two_others() -> None:
    ratings: list[Rating] = []
    for i, base in enumerate([1, 2, 3, 4]):
        ratings += [
            Rating(f"i{i}", "b", "accuracy", base),
            Rating(f"i{i}", "c", "accuracy", base),
            Rating(f"i{i}", "a", "accuracy", base + 1),
        ]
    ratings.append(Rating("lonely", "a", "accuracy", 5))  # no one else rated it: not counted
    ratings.append(Rating("i0", "a", "label", "good"))  # label criteria have no bias
    ratings.append(Rating("i0", "b", "label", "bad"))
    # a: (x+1) - x = +1; b: x - (x + 1 + x) / 2 = -0.5; likewise c.
    assert reviewer_bias(ratings) == [
        ReviewerBias("a", "accuracy", 1.0, 4),
        ReviewerBias("b", "accuracy", -0.5, 4),
        ReviewerBias("c", "accuracy", -0.5, 4),
    ]


def test_bias_sorted_by_criterion_then_reviewer() -> None:
    ratings = pairs("safety", [1, 2], [2, 3]) + pairs("helpfulness", [4], [2])
    assert [(b.criterion, b.reviewer, b.mean_offset) for b in reviewer_bias(ratings)] == [
        ("helpfulness", "a", 2.0),
        ("helpfulness", "b", -2.0),
        ("safety", "a", -1.0),
        ("safety", "b", 1.0),
    ]


def test_no_ratings() -> None:
    assert agreement([]) == []
    assert reviewer_bias([]) == []


@pytest.mark.parametrize(("value", "kind"), [(3, "score"), ("good", "label")])
def test_criterion_without_a_shared_item(value: Value, kind: str) -> None:
    ratings = [Rating("i0", "a", "c", value), Rating("i1", "b", "c", value)]
    assert only(ratings) == CriterionAgreement("c", kind, 0, 0, 0, None, None, None, 0)
    assert reviewer_bias(ratings) == []


def test_identical_scores_everywhere_are_perfect_agreement() -> None:
    ratings = (Rating(f"i{i}", r, "c", 4) for i in range(3) for r in "abc")  # a one-shot iterable
    result = only(list(ratings))
    assert result.alpha == 1.0
    assert result.ratings == 9


def test_identical_labels_everywhere_are_perfect_agreement() -> None:
    result = only(pairs("label", ["ok"] * 3, ["ok"] * 3))
    assert (result.alpha, result.cohen_kappa, result.fleiss_kappa) == (1.0, 1.0, 1.0)
    assert result.fleiss_items == 3


def test_unanimity_is_judged_on_shared_items_only() -> None:
    # i9 has a single, different rating: it takes no part, so what is left is unanimous.
    ratings = [*pairs("c", [2, 2], [2, 2]), Rating("i9", "a", "c", 5)]
    assert only(ratings).alpha == 1.0


def test_perfect_agreement_with_variance_is_computed() -> None:
    result = only(pairs("label", ["x", "y", "x"], ["x", "y", "x"]))
    assert (result.alpha, result.cohen_kappa, result.fleiss_kappa) == (1.0, 1.0, 1.0)


def test_later_rating_by_the_same_reviewer_wins() -> None:
    ratings = [
        Rating("i0", "a", "c", 5),
        Rating("i0", "b", "c", 3),
        Rating("i1", "a", "c", 1),
        Rating("i1", "b", "c", 1),
        Rating("i0", "a", "c", 3),  # a changes their mind: now both agree on every item
    ]
    result = only(ratings)
    assert result.alpha == 1.0
    assert result.ratings == 4
    assert [b.mean_offset for b in reviewer_bias(ratings)] == [0.0, 0.0]


def test_nan_score_is_missing() -> None:
    ratings = [*pairs("c", [1, 3], [1, 3]), Rating("i0", "c", "c", math.nan)]
    result = only(ratings)
    assert (result.reviewers, result.ratings, result.alpha) == (2, 4, 1.0)


def test_fleiss_ties_go_to_the_larger_rater_count() -> None:
    two = pairs("label", ["x", "y"], ["x", "y"])  # two items, two raters, in full agreement
    three = [
        Rating(f"j{i}", r, "label", v)
        for i, votes in enumerate(["xxy", "yyx"])
        for r, v in zip("abc", votes, strict=True)
    ]
    result = only(two + three)
    assert (result.items, result.fleiss_items) == (4, 2)
    # Only the three-rater items: P_i = (2^2 + 1^2 - 3) / (3 * 2) = 1/3 each, pooled x = 1/2,
    # Pe = 1/2, kappa = (1/3 - 1/2) / (1 - 1/2) = -1/3 (the two-rater items alone give 1.0).
    assert result.fleiss_kappa == pytest.approx(-1 / 3)
    assert result.cohen_kappa is None  # three reviewers overall


def test_criteria_sorted_by_name() -> None:
    ratings = pairs("safety", [1, 2], [1, 2]) + pairs("accuracy", ["y"], ["n"])
    assert [r.criterion for r in agreement(ratings)] == ["accuracy", "safety"]


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="level"):
        agreement([], level="cardinal")
