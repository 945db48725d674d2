"""The rules file: the shipped example loads, and each mistake is reported with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftline.alerts.rules import RulesError, load_rules, parse_rules
from tests.alerts.conftest import SECRET

EXAMPLE = Path(__file__).parents[2] / "deploy" / "alerts.yaml"
EXAMPLE_ENV = {
    "DRIFTLINE_WEBHOOK_URL": "http://127.0.0.1:9/hook",
    "DRIFTLINE_WEBHOOK_SECRET": SECRET,
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XXXX",
    "ALERTMANAGER_URL": "http://127.0.0.1:9093",
}


def test_the_shipped_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    rules = load_rules(EXAMPLE)
    names = {r.alert for r in rules.rules}
    assert {"EmbeddingDrift", "LowRelevanceAnswers", "HighErrorRate", "RetrainOnFeedback"} <= names
    assert rules.route is not None and rules.route.routes[0].continue_
    hook = rules.receivers[0].webhook
    assert hook is not None and hook.secret is not None
    assert hook.secret.get_secret_value() == SECRET
    assert SECRET not in repr(rules)  # secrets never reach logs through repr


def _problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "r.yaml")
    return str(caught.value).splitlines()


def test_each_mistake_names_its_line() -> None:
    problems = _problems(
        """rules:
  - alert: Drift
    when:
      drift: {consecutive: 0}
  - alert: Errors
    when:
      metric: {metric: error_rat, above: 0.1}
    for: 5 minutes
    labels: {"bad-name": x}
  - alert: Both
    when:
      drift: {}
      feedback: {at_least: 3}
    colour: red
"""
    )
    assert problems == [
        "r.yaml:4: rules.0.when.drift.consecutive: Input should be greater than or equal to 1",
        "r.yaml:7: rules.1.when.metric.metric: unknown metric 'error_rat'; one of calls, "
        "error_rate, p50_latency_ms, p95_latency_ms, p99_latency_ms, tokens_per_call, "
        "cost_per_call",
        "r.yaml:8: rules.1.for: duration '5 minutes' must look like 30s, 15m, 1h30m or 2d",
        "r.yaml:9: rules.1.labels: label name 'bad-name' must match ^[a-zA-Z_][a-zA-Z0-9_]*$",
        "r.yaml:11: rules.2.when: "
        "give exactly one condition: drift, flags, metric, feedback, model, judge or experiment",
        "r.yaml:14: rules.2.colour: Extra inputs are not permitted",
    ]


def test_policy_mistakes() -> None:
    assert _problems(
        """route: {receiver: nobody}
receivers:
  - name: hook
    webhook: {url: "http://x", secret: "not-base64!"}
"""
    ) == ["r.yaml:4: receivers.0.webhook.secret: secret must be whsec_ followed by base64"]
    assert _problems("route: {receiver: nobody}\n") == [
        "r.yaml:1: file: route: receiver 'nobody' is not defined in receivers"
    ]
    assert _problems(
        "rules:\n  - alert: R\n    when: {feedback: {at_least: 1}}\n    retrain: {}\n"
    ) == ["r.yaml:1: file: a rule has retrain: but the file has no retraining: launcher"]
    assert _problems("retraining: {command: [train], api_key_file: /run/secrets/admin.key}\n") == [
        "r.yaml:1: retraining: api_key_file must name each project's key file with {project}"
    ]
    assert _problems("inhibit_rules:\n  - source_matchers: [sev]\n    target_matchers: []\n") == [
        "r.yaml:2: inhibit_rules.0.source_matchers: matcher 'sev' must look like "
        'name="value" (operators =, !=, =~, !~)'
    ]


def test_syntax_errors_and_missing_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems("rules:\n  - alert: [unclosed\n") == [
        "r.yaml:3: YAML syntax: expected ',' or ']', but got '<stream end>'"
    ]
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert _problems("receivers:\n  - name: h\n    webhook: {url: '${NOT_SET_ANYWHERE}'}\n") == [
        "r.yaml:3: environment variable NOT_SET_ANYWHERE is not set"
    ]


def test_rules_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - alert: X\n    when: {flags: {reason: sad, at_least: 1}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "rules", "check", str(EXAMPLE), str(bad)],
        capture_output=True, text=True, env={**EXAMPLE_ENV, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 1
    assert f"{EXAMPLE}: ok: 12 rules, 2 receivers, 1 inhibit rules, 1 Alertmanagers" in run.stdout
    assert f"{bad}:3: rules.0.when.flags.reason: unknown reason 'sad'" in run.stderr
