"""Whether people agree with a judge: per criterion, over the audited calls of a rolling
window, Spearman's rank correlation between the judge's score and the reviewers' mean, and
Krippendorff's alpha (interval) between the two. A judge is trusted on a criterion once it has
`min_audited` audited calls and a Spearman of at least `min_spearman`; untrusted below it;
undecided before."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from driftline.evaluators.config import EvaluatorSettings
from driftline.review.agreement import Rating, agreement
from driftline.review.tables import judged_and_reviewed
from driftline.store import Store


@dataclass(frozen=True)
class CriterionTrust:
    criterion: str
    audited: int
    spearman: float | None
    alpha: float | None
    trusted: bool | None  # None: fewer than min_audited audited calls


@dataclass(frozen=True)
class Bar:
    """What trust asks: `min_spearman` on `min_audited` audited calls within `days`."""

    min_spearman: float
    min_audited: int
    days: float

    @classmethod
    def of(cls, settings: EvaluatorSettings) -> Bar:
        return cls(settings.min_spearman, settings.min_audited, settings.agreement_days)


@dataclass(frozen=True)
class JudgeTrust:
    criteria: list[CriterionTrust]
    bar: Bar

    @property
    def trusted(self) -> bool | None:
        """Trusted on every criterion it was audited on; False when any is below the bar."""
        decided = [c.trusted for c in self.criteria]
        if any(t is False for t in decided):
            return False
        return True if decided and all(decided) else None


def judge_trust(store: Store, project: str, user: str, bar: Bar, now_ns: int) -> JudgeTrust:
    """The judge `user` (NAME@VERSION)'s agreement with the project's reviewers."""
    since = now_ns - round(bar.days * 86_400) * 10**9
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in judged_and_reviewed(store, project, user, since):
        pairs.setdefault(row["name"], []).append((row["judge"], row["people"]))
    criteria = [_criterion(name, found, bar) for name, found in sorted(pairs.items())]
    return JudgeTrust(criteria, bar)


def _criterion(name: str, pairs: list[tuple[float, float]], bar: Bar) -> CriterionTrust:
    from scipy.stats import spearmanr  # scipy loads only where agreement is computed

    judge, people = [j for j, _ in pairs], [p for _, p in pairs]
    rho = None
    if len(pairs) >= 2 and len(set(judge)) > 1 and len(set(people)) > 1:
        found = float(spearmanr(judge, people).statistic)
        rho = found if math.isfinite(found) else None
    ratings = [Rating(str(i), "judge", name, j) for i, j in enumerate(judge)]
    ratings += [Rating(str(i), "people", name, p) for i, p in enumerate(people)]
    alpha = agreement(ratings)[0].alpha if pairs else None
    trusted = None
    if len(pairs) >= bar.min_audited:
        trusted = rho is not None and rho >= bar.min_spearman
    return CriterionTrust(name, len(pairs), rho, alpha, trusted)


def judges_table(
    store: Store, project: str, evaluators: Mapping[str, EvaluatorSettings], now_ns: int
) -> list[dict[str, Any]]:
    """Every online judge of the project with its agreement, for the review UI."""
    found = []
    for name, config in sorted(evaluators.items()):
        if config.kind != "llm_judge" or not config.grades(project):
            continue
        user = f"{name}@{config.version}"
        trust = judge_trust(store, project, user, Bar.of(config), now_ns)
        found.append({"user": user, "trusted": trust.trusted, "min_spearman": config.min_spearman,
                      "min_audited": config.min_audited,
                      "criteria": [asdict(c) for c in trust.criteria]})  # fmt: skip
    return found
