"""The gate's judge: the evaluators' LLM judge on the gate's criteria."""

from __future__ import annotations

from driftline.evaluators.judge import LLMJudge
from driftline.finetune.config import JudgeSettings


def gate_judge(settings: JudgeSettings) -> LLMJudge:
    """The judge the gate trusts only where it agrees with people (`min_spearman`)."""
    return LLMJudge(settings, settings.criteria)
