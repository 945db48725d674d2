"""Inter-rater agreement per criterion and per-reviewer bias for reviewer scores and labels.

Pure functions over `Rating`s. Conventions:

- A reviewer who rated the same (item, criterion) twice counts once: the iterable is taken in
  order and the later rating wins (pass ratings oldest first).
- A criterion is a "label" criterion when any of its values is a str or bool, else "score".
- A NaN score is skipped as missing; it does not replace an earlier rating.
- Only items with at least two ratings on a criterion enter its statistics.
- When every rating used is the same value, the chance-corrected statistics are 0/0; they are
  reported as 1.0 (perfect agreement). Any other undefined or NaN result is None.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

# krippendorff, sklearn and statsmodels (with scipy and pandas, ~150 MB resident) are imported
# where a statistic is computed, not when the collector starts.

Value = float | str | bool
Level = Literal["nominal", "ordinal", "interval", "ratio"]
# item -> reviewer -> value, for one criterion
Table = dict[str, dict[str, Value]]

LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval", "ratio")


@dataclass(frozen=True)
class Rating:
    """One reviewer's judgement of one item on one criterion."""

    item: str
    reviewer: str
    criterion: str
    value: Value


@dataclass(frozen=True)
class CriterionAgreement:
    """Agreement among reviewers on one criterion."""

    criterion: str
    kind: str
    items: int
    reviewers: int
    ratings: int
    alpha: float | None
    cohen_kappa: float | None
    fleiss_kappa: float | None
    fleiss_items: int


@dataclass(frozen=True)
class ReviewerBias:
    """How far one reviewer's scores sit from the other reviewers' on the same items."""

    reviewer: str
    criterion: str
    mean_offset: float
    items: int


def agreement(ratings: Iterable[Rating], level: str = "interval") -> list[CriterionAgreement]:
    """Per criterion, sorted by name; score or label by the values' type (bool is a label)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    tables = _tables(ratings)
    return [_criterion(name, tables[name], level) for name in sorted(tables)]


def reviewer_bias(ratings: Iterable[Rating]) -> list[ReviewerBias]:
    """Numeric criteria only, sorted by (criterion, reviewer)."""
    out: list[ReviewerBias] = []
    for name, table in sorted(_tables(ratings).items()):
        if _is_label(table):
            continue
        offsets = _offsets(_shared(table))
        out.extend(
            ReviewerBias(reviewer, name, statistics.fmean(diffs), len(diffs))
            for reviewer, diffs in sorted(offsets.items())
        )
    return out


def _tables(ratings: Iterable[Rating]) -> dict[str, Table]:
    """Group by criterion and item, keeping each reviewer's last rating."""
    tables: dict[str, Table] = defaultdict(dict)
    for r in ratings:
        if _is_missing(r.value):
            continue
        tables[r.criterion].setdefault(r.item, {})[r.reviewer] = r.value
    return dict(tables)


def _is_missing(value: Value) -> bool:
    """True for a NaN score."""
    return isinstance(value, float) and math.isnan(value)


def _is_label(table: Table) -> bool:
    """True when any value is categorical (str or bool)."""
    return any(isinstance(v, str | bool) for row in table.values() for v in row.values())


def _shared(table: Table) -> Table:
    """Only the items rated by at least two reviewers."""
    return {item: row for item, row in table.items() if len(row) >= 2}


def _criterion(name: str, table: Table, level: Level) -> CriterionAgreement:
    """Statistics for one criterion."""
    label = _is_label(table)
    shared = _shared(table)
    reviewers = sorted({reviewer for row in shared.values() for reviewer in row})
    values = [v for row in shared.values() for v in row.values()]
    codes = _codes(values) if label else {}
    # bool is an int: key on the type too so True and 1 stay distinct categories
    unanimous = len({(type(v) is bool, v) for v in values}) == 1
    alpha = cohen = fleiss = None
    fleiss_n = 0
    if shared:
        matrix = _matrix(shared, reviewers, codes)
        alpha = 1.0 if unanimous else _alpha(matrix, "nominal" if label else level)
        if label and len(reviewers) == 2:
            cohen = 1.0 if unanimous else _cohen(matrix)
        if label:
            rows = _fleiss_rows(shared, codes)
            fleiss, fleiss_n = 1.0 if unanimous else _fleiss(rows), len(rows)
    return CriterionAgreement(
        criterion=name,
        kind="label" if label else "score",
        items=len(shared),
        reviewers=len(reviewers),
        ratings=len(values),
        alpha=alpha,
        cohen_kappa=cohen,
        fleiss_kappa=fleiss,
        fleiss_items=fleiss_n,
    )


def _codes(values: Iterable[Value]) -> dict[tuple[bool, Value], float]:
    """Number each distinct category; the order is arbitrary but stable."""
    keys = sorted(
        {(type(v) is bool, v) for v in values}, key=lambda k: (k[0], type(k[1]).__name__, str(k[1]))
    )
    return {key: float(i) for i, key in enumerate(keys)}


def _code(value: Value, codes: Mapping[tuple[bool, Value], float]) -> float:
    """A label's category number, or the score itself when there are no codes."""
    return codes[(type(value) is bool, value)] if codes else float(value)


def _matrix(
    table: Table, reviewers: Sequence[str], codes: Mapping[tuple[bool, Value], float]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Reviewers x items, NaN where a reviewer did not rate an item."""
    matrix = np.full((len(reviewers), len(table)), np.nan)
    row_of = {reviewer: i for i, reviewer in enumerate(reviewers)}
    for col, row in enumerate(table.values()):
        for reviewer, value in row.items():
            matrix[row_of[reviewer], col] = _code(value, codes)
    return matrix


def _alpha(matrix: np.ndarray[Any, np.dtype[np.float64]], level: Level) -> float | None:
    """Krippendorff's alpha, None where undefined."""
    import krippendorff

    try:
        return _finite(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except ValueError:  # the library raises instead of returning NaN when there is one value
        return None


def _cohen(matrix: np.ndarray[Any, np.dtype[np.float64]]) -> float | None:
    """Cohen's kappa for two reviewers who both rated every item."""
    from sklearn.metrics import cohen_kappa_score

    first, second = matrix
    # explicit labels: without them sklearn warns when one reviewer used a single category
    labels = np.unique(matrix)
    return _finite(cohen_kappa_score(first, second, labels=labels))


def _fleiss_rows(table: Table, codes: Mapping[tuple[bool, Value], float]) -> list[list[float]]:
    """Coded ratings of the items rated by the most common number of reviewers."""
    # Fleiss needs the same count per item; ties go to the larger count, which uses more ratings
    counts = Counter(len(row) for row in table.values())
    size = max(counts, key=lambda n: (counts[n], n))
    return [[_code(v, codes) for v in row.values()] for row in table.values() if len(row) == size]


def _fleiss(rows: list[list[float]]) -> float | None:
    """Fleiss' kappa over items with the same number of ratings each."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    aggregated, _ = aggregate_raters(np.array(rows))
    return _finite(fleiss_kappa(aggregated, method="fleiss"))


def _offsets(table: Table) -> dict[str, list[float]]:
    """Per reviewer, own score minus the mean of the other reviewers' scores, one per item."""
    offsets: dict[str, list[float]] = defaultdict(list)
    for row in table.values():
        for reviewer, value in row.items():
            others = statistics.fmean(float(v) for r, v in row.items() if r != reviewer)
            offsets[reviewer].append(float(value) - others)
    return offsets


def _finite(value: Any) -> float | None:
    """The value as a float, None when NaN or infinite."""
    number = float(value)
    return number if math.isfinite(number) else None
