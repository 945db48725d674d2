"""The `[evaluators.NAME]` settings: what grades production calls, how many, at what cost."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
Kind = Literal["llm_judge", "relevance", "refusal", "empty", "json"]


class JudgeEndpoint(BaseModel):
    """An OpenAI-compatible chat-completions endpoint and model that grades answers."""

    model_config = {"extra": "forbid"}

    url: str = Field(description="base URL, e.g. https://api.openai.com/v1")
    model: str
    api_key: SecretStr = SecretStr("")  # never shown: not in errors, logs or dumps
    timeout: float = Field(60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://: {value!r}")
        return value


class EvaluatorSettings(BaseModel):
    """One evaluator. `llm_judge` scores the rubric's criteria (or `criteria`) from 1 to 5 with
    a chat model; `relevance` is the cosine between the question's and the answer's embeddings
    (the detectors' embedder); `refusal`, `empty` and `json` are built-in checks that cost
    nothing."""

    model_config = {"extra": "forbid"}

    kind: Kind
    version: str = Field("1", pattern=r"^[\w.-]{1,32}$", description="a new version grades again")
    projects: list[str] = Field(default_factory=list, description="projects graded; empty: all")
    sample_rate: float = Field(0.1, gt=0, le=1, description="share of new calls graded")
    daily_budget: int = Field(1000, ge=1, description="calls graded a day per project and service")
    concurrency: int = Field(4, ge=1, le=64, description="judge requests in flight")
    max_retries: int = Field(3, ge=0, le=10, description="on 429 and 5xx, after Retry-After")
    # people audit it
    audit_rate: float = Field(
        0.1, ge=0, le=1, description="share of graded calls queued for review (judge_audit)"
    )
    min_spearman: float = Field(0.8, ge=-1, le=1, description="trusted at or above, per criterion")
    min_audited: int = Field(30, ge=2, description="audited calls before trust is decided")
    agreement_days: int = Field(30, ge=1, le=365, description="the rolling window of agreement")
    # llm_judge only
    judge: JudgeEndpoint | None = None
    criteria: list[str] | None = Field(None, description="default: the project's rubric")
    prompt: str | None = Field(None, description="template with {criteria}, {prompt}, {response}")
    input_price_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_price_per_mtok: float = Field(0.0, ge=0, description="USD per million answer tokens")
    daily_cost_cap_usd: float = Field(10.0, ge=0, description="judge spend a day, all projects")

    def grades(self, project: str) -> bool:
        """Whether it grades `project`'s calls (every project's without `projects`)."""
        return not self.projects or project in self.projects

    @model_validator(mode="after")
    def _judge_for_llm(self) -> EvaluatorSettings:
        if self.kind == "llm_judge" and self.judge is None:
            raise ValueError("an llm_judge needs judge = {url = ..., model = ...}")
        if self.kind != "llm_judge" and (self.judge or self.criteria or self.prompt):
            raise ValueError(f"judge, criteria and prompt are for llm_judge, not {self.kind}")
        if self.prompt is not None:
            missing = [k for k in ("{prompt}", "{response}") if k not in self.prompt]
            if missing:
                raise ValueError(f"prompt must contain {' and '.join(missing)}")
        return self


class EvaluationSettings(BaseModel):
    """How the evaluators' loop runs (inside `driftline serve`)."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    interval_seconds: float = Field(10.0, gt=0, description="between passes")
    batch_calls: int = Field(500, ge=1, le=10_000, description="new calls read per pass")
    settle_seconds: float = Field(
        5.0, ge=0, description="calls ingested more recently wait (an insert may be in flight)"
    )
    agreement_interval_seconds: float = Field(
        60.0, ge=0, description="how often the judges' agreement with people is read again"
    )


def check_names(evaluators: dict[str, EvaluatorSettings]) -> dict[str, EvaluatorSettings]:
    for name in evaluators:
        if not _NAME.match(name):
            raise ValueError(f"{name!r}: a name is 1-32 of a-z, 0-9 or _, starting with a letter")
    return evaluators


class ExperimentSettings(BaseModel):
    """How two model versions are compared on live traffic (sdk.choose_version)."""

    model_config = {"extra": "forbid"}

    days: int = Field(14, ge=1, le=90, description="the live traffic compared: the last days")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="chance of a false verdict, all metrics")
    min_effect: float = Field(
        0.05, gt=0, le=1, description="the smallest difference worth finding, of the baseline"
    )
    max_drop: float = Field(
        0.05, ge=0, le=1, description="a candidate wins once shown worse by less than this"
    )
    min_win_rate: float = Field(
        0.6, ge=0.5, le=1,
        description="where answers were judged pairwise, the share a winning candidate takes",
    )  # fmt: skip
