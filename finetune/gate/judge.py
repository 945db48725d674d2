"""The gate's LLM judge: its own (`[finetune.gate.judge]`), checked on the snapshot's held-out
scores, or an online evaluator (`[finetune.gate] evaluator`), whose standing with the people who
audit its live grades decides whether the gate may use it."""

from __future__ import annotations

from collections.abc import Mapping

from driftline.evaluators.agreement import JudgeTrust
from driftline.evaluators.config import EvaluatorSettings
from driftline.evaluators.judge import LLMJudge, evaluator_judge
from driftline.finetune.config import GateSettings
from driftline.finetune.ledger import Ledger


class GateJudgeError(ValueError):
    """The gate's judge cannot be asked for this project."""


def gate_judge(
    gate: GateSettings,
    evaluators: Mapping[str, EvaluatorSettings],
    ledger: Ledger,
    rubric: list[str],
) -> tuple[LLMJudge | None, JudgeTrust | None]:
    """The judge the gate asks (None: none configured), and an online judge's audit."""
    if gate.judge is not None:
        return LLMJudge(gate.judge, gate.judge.criteria), None
    if gate.evaluator is None:
        return None, None
    config = evaluators[gate.evaluator]  # Settings checks it is an llm_judge
    if not config.grades(ledger.project):
        raise GateJudgeError(
            f"evaluator {gate.evaluator!r} grades only {', '.join(config.projects)}, not "
            f"{ledger.project!r}: no audit of it can decide this project's gate"
        )
    judge = evaluator_judge(config, config.criteria or rubric)
    return judge, ledger.judge_trust(gate.evaluator, config)
