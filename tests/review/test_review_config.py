"""The [review] settings: a rubric per project, and rubrics that cannot work are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.api.config import ConfigError, load_settings


def test_a_project_can_have_its_own_rubric(tmp_path: Path) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text(
        "[review]\nreviews_per_item = 3\n"
        "[review.projects.support]\ncriteria = ['politeness']\nscale_min = 0\nscale_max = 2\n"
    )
    settings = load_settings(config)
    assert settings.review.reviews_per_item == 3
    support = settings.review.rubric_for("support")
    assert (support.criteria, support.scale_min, support.scale_max) == (["politeness"], 0, 2)
    assert settings.review.rubric_for("other").criteria == ["accuracy", "helpfulness", "safety"]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[review.rubric]\ncriteria = ['Accuracy!']\n", "review.rubric.criteria"),
        ("[review.rubric]\nscale_min = 5\nscale_max = 5\n", "scale_max must be above scale_min"),
        ("[review.rubric]\nlabels = ['a', 'a']\n", "names must be unique"),
        ("[review]\nreviews_per_item = 0\n", "review.reviews_per_item"),
    ],
)
def test_bad_rubrics_are_refused(tmp_path: Path, toml: str, problem: str) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config)
