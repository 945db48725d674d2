"""The `[finetune]` settings: what a snapshot must hold, how a method trains, what the gate asks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from driftline.evaluators.config import JudgeEndpoint

METHODS = ("dpo", "kto", "reward", "ppo", "grpo")
Method = Literal["dpo", "kto", "reward", "ppo", "grpo"]


class DataRules(BaseModel):
    """When a snapshot is not worth training on."""

    model_config = {"extra": "forbid"}

    min_rows: int = Field(8, ge=1, description="fewest training rows a run accepts")
    min_test_rows: int = Field(2, ge=1, description="fewest held-out rows the gate accepts")
    max_label_share: float = Field(
        0.9, gt=0.5, le=1.0, description="KTO: the largest share one label may have"
    )


class TrainSettings(BaseModel):
    """Hyperparameters shared by the methods (TRL's names where TRL has one)."""

    model_config = {"extra": "forbid"}

    learning_rate: float = Field(5e-6, gt=0)
    epochs: float = Field(1.0, gt=0, description="passes over the training rows")
    max_steps: int = Field(-1, ge=-1, description="stop after this many steps (-1: epochs)")
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    max_length: int = Field(1024, ge=16, description="tokens of prompt and response")
    beta: float = Field(0.1, gt=0, description="DPO/KTO: strength of the pull to the reference")
    loss_type: str = Field("sigmoid", description="DPO loss (sigmoid, ipo, hinge, robust, ...)")
    lora: bool = Field(False, description="train LoRA adapters (PEFT), merged on save")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    save_steps: int = Field(50, ge=1, description="checkpoint every this many steps (resume)")
    seed: int = 0
    # online RL (ppo, grpo)
    rl_steps: int = Field(20, ge=1, description="PPO/GRPO: optimisation steps")
    rollout_batch: int = Field(16, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    relevance_weight: float = Field(
        0.5, ge=0, description="PPO/GRPO reward: weight of prompt-response relevance"
    )


class JudgeSettings(JudgeEndpoint):
    """An OpenAI-compatible chat model that scores answers on the rubric for the gate."""

    criteria: list[str] = Field(default_factory=lambda: ["accuracy", "helpfulness", "safety"])
    min_spearman: float = Field(0.8, ge=-1, le=1)


class GateSettings(BaseModel):
    """What a candidate must show on the snapshot's held-out rows to be promoted."""

    model_config = {"extra": "forbid"}

    min_win_rate: float = Field(0.6, ge=0, le=1)
    max_drop: float = Field(0.05, ge=0, le=1, description="largest relative fall of a criterion")
    max_new_tokens: int = Field(64, ge=1, description="length of the generations compared")
    judge: JudgeSettings | None = None
    evaluator: str | None = Field(
        None,
        description="instead of judge: the online LLM judge [evaluators.NAME], trusted while "
        "people's audits of its live grades agree with it",
    )

    @model_validator(mode="after")
    def _one_judge(self) -> GateSettings:
        if self.judge is not None and self.evaluator is not None:
            raise ValueError("give judge or evaluator, not both: the gate asks one LLM judge")
        return self


class FinetuneSettings(BaseModel):
    model_config = {"extra": "forbid"}

    data: DataRules = DataRules.model_validate({})
    train: TrainSettings = TrainSettings.model_validate({})
    gate: GateSettings = GateSettings.model_validate({})
    runs_dir: Path = Field(
        Path("driftline-runs"), description="checkpoints and logs of runs, one folder each"
    )
    models_root: Path = Field(
        Path("models"), description="the folder the API registers model versions from (any depth)"
    )
