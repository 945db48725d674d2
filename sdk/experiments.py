"""Live A/B of model versions: the app splits its traffic, and the choice is on the span.

    version = choose_version(user_id, {"ft-v1": 0.9, "ft-v2": 0.1})
    model = MODELS[version]

The same key (a user or conversation id) gets the same version every time, in every process,
as long as the weights stay the same: a user does not flip between versions mid-conversation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from opentelemetry import trace

EXPERIMENT = "driftline.experiment.name"
VERSION = "driftline.experiment.version"


def choose_version(key: str, weights: Mapping[str, float], experiment: str = "default") -> str:
    """The version `key` gets, drawn by `weights` (relative, need not sum to 1) from a hash of
    the experiment and the key; recorded on the current span (`driftline.experiment.name`,
    `driftline.experiment.version`) so driftline can compare the versions on live traffic."""
    _check(key, weights, experiment)
    digest = hashlib.sha256(f"{experiment}\0{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights.values())
    chosen, running = "", 0.0
    for version in sorted(weights):  # sorted: the same split whatever the dict's order
        if weights[version] <= 0:
            continue
        chosen = version
        running += weights[version]
        if point < running:
            break
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(EXPERIMENT, experiment)
        span.set_attribute(VERSION, chosen)
    return chosen


def _check(key: str, weights: Mapping[str, float], experiment: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(
            "choose_version: key must be a non-empty string (a user or conversation id)"
        )
    if not isinstance(experiment, str) or not experiment:
        raise ValueError("choose_version: experiment must be a non-empty string")
    if not weights:
        raise ValueError("choose_version: weights must name at least one version")
    for version, weight in weights.items():
        if not isinstance(version, str) or not version:
            raise ValueError(
                f"choose_version: version names must be non-empty strings, got {version!r}"
            )
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"choose_version: weight of {version!r} must be a number >= 0, got {weight!r}"
            )
    if not sum(weights.values()) > 0:
        raise ValueError("choose_version: at least one weight must be above 0")
