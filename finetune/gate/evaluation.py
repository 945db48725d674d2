"""The eval gate: the candidate against the baseline on a snapshot's held-out rows.

- Preference accuracy: DPO's implicit reward, log pi_candidate(y|x) - log pi_baseline(y|x),
  ranks the chosen answer above the rejected one (KTO rows: its sign matches the label).
- Win rate: on each held-out prompt both models answer (greedy); a reward model, or an LLM judge
  whose scores agree with the people's (Spearman above the bar), says whose answer is better.
  An online judge's agreement is its audit on live calls; where the audit has not decided yet,
  or for the gate's own judge, it is measured on the snapshot's held-out scores.
  Without either, the held-out pairs themselves decide: the candidate wins a pair its implicit
  reward ranks as people did.
- Criteria: the mean of each rubric criterion (by the judge) or the reward model's score must not
  fall by more than `max_drop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from driftline.evaluators.agreement import JudgeTrust
from driftline.finetune import registry
from driftline.finetune.config import FinetuneSettings
from driftline.finetune.dataset.rows import Row
from driftline.finetune.gate.verdict import (
    JudgeCheck,
    Verdict,
    WinRate,
    check_judge,
    verdict,
    win_rate,
)
from driftline.finetune.ledger import Ledger, ModelVersion, ScoredItem, VersionError
from driftline.finetune.model_folders import load_causal_lm
from driftline.finetune.train import render_prompt
from driftline.finetune.training_data import DataError

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


class Judge(Protocol):
    """Scores answers on rubric criteria (`driftline.evaluators.judge.LLMJudge`)."""

    criteria: list[str]

    def score(self, prompt: str, response: str) -> dict[str, float]: ...


@dataclass
class Evidence:
    """Everything the gate measured, as stored with the verdict."""

    snapshot_id: str
    baseline: str
    candidate: str
    held_out_rows: int
    preference_accuracy: float
    baseline_likelihood_accuracy: float | None  # None for unpaired (KTO) rows
    win_rate: dict[str, Any] = field(default_factory=dict)
    criteria_before: dict[str, float] = field(default_factory=dict)
    criteria_after: dict[str, float] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    examples: list[dict[str, str]] = field(default_factory=list)


def run_gate(
    ledger: Ledger,
    candidate: Path,
    baseline: Path,
    snapshot_id: str,
    settings: FinetuneSettings,
    *,
    reward: RewardFn | None = None,
    judge: Judge | None = None,
    audit: JudgeTrust | None = None,
) -> tuple[ModelVersion, Verdict, Evidence]:
    """Measure, decide, and record the verdict on the candidate's version. `audit`: when
    `judge` is an online evaluator, how far people's audits of its live grades agree with it."""
    if Path(candidate).resolve() == Path(baseline).resolve():
        raise VersionError(f"the candidate {candidate} is the baseline itself")
    known = registry.find(ledger, str(candidate))
    if known is not None:
        registry.check_judgeable(known)
    _, _, test = ledger.snapshot(snapshot_id)
    if len(test) < settings.data.min_test_rows:
        raise DataError(
            f"snapshot {snapshot_id} holds out {len(test)} rows, fewer than the "
            f"{settings.data.min_test_rows} the gate needs (finetune.data.min_test_rows); "
            "export with a larger --test-fraction"
        )
    cand_model, tokenizer = load_causal_lm(candidate)
    base_model, _ = load_causal_lm(baseline)
    scorer = _Scorer(cand_model, base_model, tokenizer)
    margins, likelihood = scorer.preferences(test)
    accuracy = _accuracy(margins)
    evidence = Evidence(
        snapshot_id=snapshot_id,
        baseline=str(baseline),
        candidate=str(candidate),
        held_out_rows=len(test),
        preference_accuracy=accuracy,
        baseline_likelihood_accuracy=_accuracy(likelihood) if likelihood else None,
    )
    wins = _pairs_wins(margins)
    source = "held-out pairs (implicit reward)"
    prompts = _distinct_prompts(test)
    if judge is not None:
        if audit is not None and audit.trusted is not None:
            check = _audited(audit)
        else:
            bar = audit.bar.min_spearman if audit is not None else None
            check = _check_judge(judge, ledger.held_out_scores(snapshot_id), settings, bar)
        evidence.judge = asdict(check)
        if check.trusted:
            answers = _answers(scorer, prompts, settings)
            wins, evidence.criteria_before, evidence.criteria_after = _judged(judge, answers)
            evidence.examples = _examples(answers)
            source = "LLM judge"
    if source != "LLM judge" and reward is not None:
        answers = _answers(scorer, prompts, settings)
        wins, before, after = _rewarded(reward, answers)
        evidence.criteria_before["reward_model"] = before
        evidence.criteria_after["reward_model"] = after
        evidence.examples = _examples(answers)
        source = "reward model"
    evidence.win_rate = {**asdict(wins), "rate": wins.rate, "source": source}
    decision = verdict(
        wins,
        evidence.criteria_before,
        evidence.criteria_after,
        min_win_rate=settings.gate.min_win_rate,
        max_drop=settings.gate.max_drop,
    )
    base_version = registry.baseline(ledger, baseline)
    version = registry.register(ledger, candidate, base_version=base_version.version)
    record = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "baseline_version": base_version.version,
        **asdict(evidence),
    }
    return registry.record_verdict(ledger, version, record), decision, evidence


def _accuracy(margins: Sequence[float]) -> float:
    """Share of rows ranked right, a tie counting half."""
    if not margins:
        return float("nan")
    return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins)


def _pairs_wins(margins: Sequence[float]) -> WinRate:
    return win_rate(
        sum(m > 0 for m in margins), sum(m == 0 for m in margins), sum(m < 0 for m in margins)
    )


def _distinct_prompts(rows: list[Row]) -> list[Any]:
    seen: dict[str, Any] = {}
    for row in rows:
        seen.setdefault(repr(row["prompt"]), row["prompt"])
    return list(seen.values())


def _plain(value: Any) -> str:
    """The text of a prompt or response: a string, or the messages' contents."""
    if isinstance(value, str):
        return value
    return "\n".join(str(m.get("content", "")) for m in value)


@dataclass(frozen=True)
class _Answers:
    prompts: list[str]  # as people read them (the judge)
    rendered: list[str]  # as the models read them (the reward model, trained on these)
    baseline: list[str]
    candidate: list[str]


class _Scorer:
    """Log-likelihoods of responses under the candidate and the baseline."""

    def __init__(self, candidate: Any, baseline: Any, tokenizer: Any) -> None:
        self.candidate, self.baseline, self.tokenizer = candidate.eval(), baseline.eval(), tokenizer

    def preferences(self, rows: list[Row]) -> tuple[list[float], list[float]]:
        """Per row: the implicit-reward margin (candidate vs baseline), and the baseline's
        own log-likelihood margin (how it ranked the pair before any training; pairs only)."""
        margins, likelihood = [], []
        for row in rows:
            if "chosen" in row:
                cand = [
                    self._logp(self.candidate, row["prompt"], row[k])
                    for k in ("chosen", "rejected")
                ]
                base = [
                    self._logp(self.baseline, row["prompt"], row[k]) for k in ("chosen", "rejected")
                ]
                margins.append(_round((cand[0] - base[0]) - (cand[1] - base[1])))
                likelihood.append(_round(base[0] - base[1]))
            else:  # KTO: the implicit reward's sign against the label
                reward = self._logp(self.candidate, row["prompt"], row["completion"]) - self._logp(
                    self.baseline, row["prompt"], row["completion"]
                )
                margins.append(_round(reward if row["label"] else -reward))
        return margins, likelihood

    def _logp(self, model: Any, prompt: Any, response: Any) -> float:
        """Sum of the response tokens' log-probabilities after the prompt, both tokenized
        apart and joined, as TRL's trainers do."""
        import torch

        prompt_text, response_text = self._texts(prompt, response)
        prompt_ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        response_ids = self.tokenizer(response_text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        return float(logps[len(prompt_ids) - 1 :].sum())

    def _texts(self, prompt: Any, response: Any) -> tuple[str, str]:
        """Prompt and response as the model reads them: through the chat template for
        messages (the response is what the template adds after the prompt)."""
        if isinstance(prompt, str):
            return prompt, _plain(response)
        rendered = render_prompt(self.tokenizer, prompt)
        full = str(self.tokenizer.apply_chat_template(prompt + response, tokenize=False))
        return rendered, full[len(rendered) :] if full.startswith(rendered) else _plain(response)

    def generate(self, model: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy answers, one prompt at a time (no padding effects)."""
        import torch

        out = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                made = model.generate(
                    **ids, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # fmt: skip
            new = made[0, ids["input_ids"].shape[1] :]
            out.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
        return out


def _round(value: float) -> float:
    """Margins within float noise of zero are ties (an untrained candidate ties everywhere)."""
    return 0.0 if abs(value) < 1e-4 else value


def _answers(scorer: _Scorer, prompts: list[Any], settings: FinetuneSettings) -> _Answers:
    rendered = [render_prompt(scorer.tokenizer, p) for p in prompts]
    n = settings.gate.max_new_tokens
    return _Answers(
        prompts=[_plain(p) for p in prompts],
        rendered=rendered,
        baseline=scorer.generate(scorer.baseline, rendered, n),
        candidate=scorer.generate(scorer.candidate, rendered, n),
    )


def _examples(answers: _Answers, k: int = 5) -> list[dict[str, str]]:
    return [
        {"prompt": p, "baseline": b, "candidate": c}
        for p, b, c in list(zip(answers.prompts, answers.baseline, answers.candidate, strict=True))[
            :k
        ]
    ]


def _rewarded(reward: RewardFn, answers: _Answers) -> tuple[WinRate, float, float]:
    """Wins by the reward model's scores, and its mean score before and after, shifted so the
    baseline's lowest score is 1 (a relative fall needs a positive scale)."""
    base = reward(answers.rendered, answers.baseline)
    cand = reward(answers.rendered, answers.candidate)
    wins = win_rate(
        sum(c > b + 1e-6 for b, c in zip(base, cand, strict=True)),
        sum(abs(c - b) <= 1e-6 for b, c in zip(base, cand, strict=True)),
        sum(c < b - 1e-6 for b, c in zip(base, cand, strict=True)),
    )
    shift = 1 - min(base)
    return wins, sum(base) / len(base) + shift, sum(cand) / len(cand) + shift


def _judged(judge: Judge, answers: _Answers) -> tuple[WinRate, dict[str, float], dict[str, float]]:
    """Wins by the judge's mean score over the criteria, and each criterion's mean."""
    before: dict[str, list[float]] = {c: [] for c in judge.criteria}
    after: dict[str, list[float]] = {c: [] for c in judge.criteria}
    won = tied = lost = 0
    for prompt, b, c in zip(answers.prompts, answers.baseline, answers.candidate, strict=True):
        sb, sc = judge.score(prompt, b), judge.score(prompt, c)
        for name in judge.criteria:
            before[name].append(sb[name])
            after[name].append(sc[name])
        mb, mc = _mean(list(sb.values())), _mean(list(sc.values()))
        won, tied, lost = won + (mc > mb), tied + (mc == mb), lost + (mc < mb)
    return (
        win_rate(won, tied, lost),
        {k: _mean(v) for k, v in before.items()},
        {k: _mean(v) for k, v in after.items()},
    )


def _audited(audit: JudgeTrust) -> JudgeCheck:
    """An online judge's standing: its least agreeing criterion, on the fewest audits."""
    rhos = [c.spearman for c in audit.criteria if c.spearman is not None]
    worst = min(rhos) if rhos else None
    audited = min(c.audited for c in audit.criteria)
    return JudgeCheck(worst, audited, bool(audit.trusted), source="online audit")


def _check_judge(
    judge: Judge, items: list[ScoredItem], settings: FinetuneSettings, bar: float | None
) -> JudgeCheck:
    """Spearman of the judge's and the people's mean scores over the held-out scored items,
    against `bar` (else the gate's judge's `min_spearman`)."""
    mine, theirs = [], []
    for item in items:
        criteria = [c for c in judge.criteria if c in item.scores]
        if not criteria:
            continue
        scores = judge.score(item.prompt, item.response)
        mine.append(_mean([scores[c] for c in criteria]))
        theirs.append(_mean([item.scores[c] for c in criteria]))
    if bar is None:
        bar = settings.gate.judge.min_spearman if settings.gate.judge else 0.8
    return check_judge(mine, theirs, bar)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
