"""The `[review]` settings: how many reviewers judge each item, and each project's rubric."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class Rubric(BaseModel):
    """What reviewers judge: scores on criteria, labels, span labels."""

    model_config = {"extra": "forbid"}

    criteria: list[str] = Field(default_factory=lambda: ["accuracy", "helpfulness", "safety"])
    scale_min: int = Field(1, ge=0)
    scale_max: int = Field(5, le=10)
    labels: list[str] = Field(
        default_factory=lambda: ["hallucination", "off_topic", "refusal", "unsafe", "outdated"]
    )
    span_labels: list[str] = Field(default_factory=lambda: ["good", "bad"])

    @field_validator("criteria", "labels", "span_labels")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} must be 1-32 of a-z, 0-9 or _, starting with a letter")
        if len(set(value)) != len(value):
            raise ValueError("names must be unique")
        return value

    @model_validator(mode="after")
    def _scale(self) -> Rubric:
        if self.scale_max <= self.scale_min:
            raise ValueError("scale_max must be above scale_min")
        return self


class ReviewSettings(BaseModel):
    model_config = {"extra": "forbid"}

    reviews_per_item: int = Field(
        2, ge=1, le=10, description="independent reviews each queued call gets"
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="how long a reviewer stays signed in"
    )
    rubric: Rubric = Rubric.model_validate({})
    projects: dict[str, Rubric] = Field(
        default_factory=dict, description="a project's own rubric instead of `rubric`"
    )

    def rubric_for(self, project: str) -> Rubric:
        return self.projects.get(project, self.rubric)
