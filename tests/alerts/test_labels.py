"""Fingerprints as Alertmanager computes them, matchers, durations."""

from __future__ import annotations

import subprocess
import sys

import pytest

from driftline.alerts.durations import format_duration, parse_duration
from driftline.alerts.labels import MatcherError, fingerprint, parse_matcher, render


def test_fingerprint_is_fnv1a_over_sorted_labels() -> None:
    # The empty set hashes to FNV-1a's offset basis; order of labels does not matter.
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    # The separator keeps name/value boundaries: {ab: c} and {a: bc} differ.
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})
    assert len(fingerprint({"alertname": "x"})) == 16


def test_fingerprint_known_value() -> None:
    # Computed by hand from the algorithm: FNV-1a 64 of b"alertname\xffDrift\xff".
    data = b"alertname\xffDrift\xff"
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    assert fingerprint({"alertname": "Drift"}) == f"{h:016x}"


@pytest.mark.parametrize(
    ("text", "labels", "hit"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ("severity=critical", {"severity": "warning"}, False),
        ('service!="bot"', {"service": "web"}, True),
        ('service=~"bot|web"', {"service": "web"}, True),
        ('service=~"bo"', {"service": "bot"}, False),  # anchored, as Alertmanager
        ('service!~"b.*"', {"service": "bot"}, False),
        ('team=""', {}, True),  # a missing label is the empty string
    ],
)
def test_matchers(text: str, labels: dict[str, str], hit: bool) -> None:
    assert parse_matcher(text).matches(labels) is hit


def test_bad_matchers_say_what_is_expected() -> None:
    with pytest.raises(MatcherError, match='name="value"'):
        parse_matcher("severity")
    with pytest.raises(MatcherError, match="regular expression"):
        parse_matcher('service=~"("')


def test_render_and_durations() -> None:
    assert render({"b": 'x"y', "a": "1"}) == '{a="1", b="x\\"y"}'
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(45) == 45
    assert format_duration(5400) == "1h30m"
    for bad in ("5x", "m5", "", "1h 30m", True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)  # type: ignore[arg-type]


def test_a_backtracking_pattern_runs_in_linear_time_on_span_labels() -> None:
    """A silence's regex runs over label values that any ingest key can set. `(a+)+$` over 40
    a's and a b takes Python's backtracking `re` about 2^40 steps; RE2, as Alertmanager's Go
    engine, answers at once. Run apart so a hang fails the test instead of the suite."""
    script = (
        "from driftline.alerts.labels import parse_matcher\n"
        "m = parse_matcher('service=~\"(a+)+$\"')\n"
        "print(m.matches({'service': 'a' * 40 + 'b'}), m.matches({'service': 'a' * 40}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the matcher backtracked: 60 s on a 41-character label")
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_patterns_re2_cannot_run_are_refused_with_the_reason() -> None:
    with pytest.raises(MatcherError, match=r"bad regular expression: .*\\1"):
        parse_matcher('service=~"(a)\\\\1"')  # a back-reference: Alertmanager refuses it too
