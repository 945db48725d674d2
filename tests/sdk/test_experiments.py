"""`choose_version`: a sticky, weighted split of live traffic between model versions, recorded
on the app's span."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.sdk import choose_version

WEIGHTS = {"ft-v1": 0.9, "ft-v2": 0.1}


def test_a_key_keeps_its_version_whatever_the_order_of_the_weights() -> None:
    first = [choose_version(f"user-{i}", WEIGHTS) for i in range(500)]
    again = [choose_version(f"user-{i}", dict(reversed(WEIGHTS.items()))) for i in range(500)]
    assert first == again
    other = [choose_version(f"user-{i}", WEIGHTS, experiment="other") for i in range(500)]
    assert other != first, "another experiment splits the users afresh"


def test_the_split_follows_the_weights() -> None:
    chosen = [choose_version(f"conversation-{i}", WEIGHTS) for i in range(20_000)]
    assert abs(chosen.count("ft-v2") / len(chosen) - 0.1) < 0.01
    assert {choose_version(f"k{i}", {"a": 1, "b": 0}) for i in range(200)} == {"a"}
    assert {choose_version(f"k{i}", {"a": 3, "b": 1}) for i in range(200)} == {"a", "b"}


def test_the_choice_is_recorded_on_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("answer"):
        version = choose_version("user-7", WEIGHTS, experiment="ft-rollout")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["driftline.experiment.name"] == "ft-rollout"
    assert span.attributes["driftline.experiment.version"] == version
    assert choose_version("user-7", WEIGHTS) in WEIGHTS  # no span: nothing to record, no error


@pytest.mark.parametrize(
    ("key", "weights", "named"),
    [
        ("", WEIGHTS, "key must be"),
        ("u", {}, "at least one version"),
        ("u", {"a": -1, "b": 1}, "weight of 'a'"),
        ("u", {"a": float("nan")}, "weight of 'a'"),
        ("u", {"a": True}, "weight of 'a'"),
        ("u", {"a": 0, "b": 0}, "above 0"),
        ("u", {"": 1}, "version names"),
    ],
)
def test_bad_arguments_are_named(key: str, weights: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        choose_version(key, weights)
