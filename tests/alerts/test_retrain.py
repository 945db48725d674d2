"""The retraining trigger: a rule with `retrain:` records a job with its evidence and data
snapshot, runs the local command or sends a signed webhook, and respects its cooldown."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry

from driftline.store import Store
from tests.alerts.conftest import SECRET, Clock, EngineFactory
from tests.alerts.receiver import Receiver


def insert_feedback(
    store: Store, at: float, n: int, project: str = "alpha", source: str = "review"
) -> None:
    ms = pa.array([round(at * 1000)] * n, pa.timestamp("ms", "UTC"))
    store.insert_arrow(
        "feedback",
        pa.table(
            {
                "project_id": [project] * n,
                "id": [f"fb-{source}-{at}-{i}" for i in range(n)],
                "trace_id": [f"{i:032x}" for i in range(n)],
                "name": ["thumbs"] * n,
                "kind": ["boolean"] * n,
                "value_number": [1.0] * n,
                "source": [source] * n,
                "created_at": ms,
                "ingested_at": ms,
            }
        ),
    )


def rules(launcher: str, condition: str = "at_least: 10") -> str:
    return f"""
rules:
  - alert: RetrainOnFeedback
    when: {{feedback: {{{condition}}}}}
    annotations: {{summary: "{{{{ $value }}}} new judgements"}}
    retrain: {{cooldown: 1h}}
retraining:
{launcher}
"""


def jobs(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT id, rule, reason, evidence, snapshot, launcher, status, exit_code, output "
        "FROM retrain_jobs FINAL ORDER BY created_at"
    )


SCRIPT = "import json, os, sys; job = json.load(open(sys.argv[1])); print('training', job['id'], os.environ['DRIFTLINE_PROJECT']); sys.exit(int(sys.argv[2]))"  # noqa: E501


def command(exit_code: int) -> str:
    argv = [sys.executable, "-c", SCRIPT, "{job_file}", str(exit_code)]
    return f"  command: {json.dumps(argv)}"


def test_feedback_starts_a_job_that_runs_the_command_once_per_cooldown(
    store: Store, clock: Clock, make_engine: EngineFactory, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    engine = make_engine(rules(command(0)), registry)
    insert_feedback(store, clock.now - 5, 9)
    assert engine.evaluate() == []
    insert_feedback(store, clock.now - 1, 3)
    [alert] = engine.evaluate()
    assert (alert.state, alert.value) == ("firing", 12)
    assert engine.retrain is not None
    engine.retrain.wait(30)

    [job] = jobs(store)
    assert (job["rule"], job["launcher"], job["status"], job["exit_code"]) == (
        "RetrainOnFeedback", "command", "succeeded", 0,
    )  # fmt: skip
    assert job["reason"] == "12 new judgements"
    assert job["output"].strip() == f"training {job['id']} alpha"
    assert json.loads(job["snapshot"])["feedback_rows"] == 12
    assert json.loads(job["evidence"])["new_feedback"] == 12
    job_file = json.loads((tmp_path / "retrain" / f"{job['id']}.json").read_text())
    assert job_file["snapshot"]["feedback_rows"] == 12

    # The job consumed the feedback: the alert resolves; new feedback inside the cooldown
    # fires it again but starts nothing.
    clock.advance(60)
    [resolved] = engine.evaluate()
    assert resolved.state == "resolved"
    insert_feedback(store, clock.now, 10)
    [again] = engine.evaluate()
    assert again.state == "firing"
    assert len(jobs(store)) == 1
    skipped = {"rule": "RetrainOnFeedback", "status": "skipped_cooldown"}
    assert registry.get_sample_value("driftline_retrain_jobs_total", skipped) == 1

    clock.advance(3600)  # after the cooldown, the still-firing alert starts the next job
    engine.evaluate()
    engine.retrain.wait(30)
    assert [j["status"] for j in jobs(store)] == ["succeeded", "succeeded"]
    assert json.loads(jobs(store)[1]["snapshot"])["feedback_rows"] == 22
    clock.advance(60)
    [resolved] = engine.evaluate()  # and its feedback is consumed in turn
    assert resolved.state == "resolved"


def test_a_failing_command_marks_the_job_failed(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    engine = make_engine(rules(command(3)))
    insert_feedback(store, clock.now - 1, 10)
    engine.evaluate()
    assert engine.retrain is not None
    engine.retrain.wait(30)
    [job] = jobs(store)
    assert (job["status"], job["exit_code"]) == ("failed", 3)


def test_webhook_launcher_sends_a_signed_job(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    with Receiver(secret=SECRET) as receiver:
        launcher = f"  webhook: {{url: '{receiver.url}/train', secret: '{SECRET}'}}"
        engine = make_engine(rules(launcher))
        insert_feedback(store, clock.now - 1, 10)
        engine.evaluate()
        engine.deliver()
        [request] = receiver.requests
    [job] = jobs(store)
    assert (job["launcher"], job["status"]) == ("webhook", "sent")
    assert request.path == "/train" and request.verified is True
    body = request.json()
    assert body["type"] == "driftline.retrain"
    assert body["data"]["id"] == job["id"]
    assert body["data"]["snapshot"]["feedback_rows"] == 10


def test_jobs_running_when_the_process_stopped_end_as_interrupted(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    sleeper = f"  command: {json.dumps([sys.executable, '-c', 'import time; time.sleep(2)'])}"
    engine = make_engine(rules(sleeper))
    insert_feedback(store, clock.now - 1, 10)
    engine.evaluate()
    assert [j["status"] for j in jobs(store)] == ["running"]
    assert engine.retrain is not None
    make_engine(rules(sleeper))  # a restart while the command runs
    assert [j["status"] for j in jobs(store)] == ["interrupted"]
    engine.retrain.wait(30)  # (here the first process lives on and records the real end)


def test_the_command_sees_its_pipelines_variables_and_none_of_the_servers_secrets(
    store: Store, clock: Clock, make_engine: EngineFactory, monkeypatch: Any
) -> None:
    secrets = {
        "DRIFTLINE_CLICKHOUSE_URL": "http://driftline:s3cret@clickhouse:8123/driftline",
        "DRIFTLINE_WEBHOOK_SECRET": "whsec_c2VjcmV0",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    wanted = {
        "DRIFTLINE_API_KEY": "dl_pipeline",
        "DRIFTLINE_METHOD": "kto",
        "TEAM_BUCKET": "s3://x",
    }
    for name, value in {**secrets, **wanted}.items():
        monkeypatch.setenv(name, value)
    printer = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    engine = make_engine(rules(f"  command: {json.dumps(printer)}\n  pass_env: [TEAM_BUCKET]"))
    insert_feedback(store, clock.now - 1, 12)
    engine.evaluate()
    assert engine.retrain is not None
    engine.retrain.wait(30)
    [job] = jobs(store)
    seen = json.loads(job["output"])
    assert not set(secrets) & set(seen), sorted(set(secrets) & set(seen))
    assert "s3cret" not in job["output"]
    assert {name: seen.get(name) for name in wanted} == wanted
    assert seen["DRIFTLINE_PROJECT"] == "alpha" and seen["DRIFTLINE_RETRAIN_JOB_ID"] == job["id"]
    assert seen["PATH"]  # the command still finds its programs


def test_the_apps_feedback_starts_no_job_unless_the_rule_asks_for_it(
    store: Store, clock: Clock, make_engine: EngineFactory
) -> None:
    # An ingest key's 1,000 corrections, as an app (or whoever holds its key) sends them.
    insert_feedback(store, clock.now - 1, 1000, source="api")
    assert make_engine(rules(command(0))).evaluate() == []
    assert jobs(store) == []
    insert_feedback(store, clock.now - 1, 10)  # reviewers' judgements
    engine = make_engine(rules(command(0)))
    [alert] = engine.evaluate()
    assert alert.value == 10
    assert engine.retrain is not None
    engine.retrain.wait(30)
    [job] = jobs(store)
    assert json.loads(job["snapshot"])["feedback_rows"] == 10
    assert json.loads(job["snapshot"])["app_feedback_rows"] == 1000

    clock.advance(7200)
    insert_feedback(store, clock.now - 1, 20, source="sdk")
    asked = make_engine(rules(command(0), "at_least: 10, app_feedback: true"))
    [alert] = asked.evaluate()
    assert alert.value == 20


def test_each_projects_job_gets_its_own_projects_key(
    store: Store, clock: Clock, make_engine: EngineFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("DRIFTLINE_API_KEY", "dl_the_servers_own")
    (tmp_path / "alpha.key").write_text("dl_alpha_admin\n")
    printer = [sys.executable, "-c", "import os; print(os.environ['DRIFTLINE_API_KEY'])"]
    launcher = (f"  command: {json.dumps(printer)}\n"
                f"  api_key_file: '{tmp_path}/{{project}}.key'")  # fmt: skip
    engine = make_engine(rules(launcher))
    insert_feedback(store, clock.now - 1, 10, project="alpha")
    insert_feedback(store, clock.now - 1, 10, project="beta")  # no key file: no job runs
    engine.evaluate()
    assert engine.retrain is not None
    engine.retrain.wait(30)
    found = {j["output"].strip().split(":")[0]: j for j in jobs(store)}
    assert found["dl_alpha_admin"]["status"] == "succeeded"
    [refused] = [j for j in jobs(store) if j["status"] == "failed"]
    assert "no key for project 'beta'" in refused["output"] and refused["exit_code"] is None
