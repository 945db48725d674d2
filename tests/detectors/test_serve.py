"""The loop as a new user runs it: `driftline serve` with detectors and a rules file, calls sent
with the SDK, a reference frozen over the API, then a topic shift with off-topic answers: drift
is found, the off-topic answers are queued, a signed webhook and a real Alertmanager get the
alert, a retraining job runs, and the alert resolves once the traffic is back to normal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from driftline import sdk
from tests.alerts.alertmanager import Alertmanager, needs_alertmanager
from tests.alerts.conftest import SECRET
from tests.alerts.receiver import Receiver
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.detectors.conftest import MIX, send, texts

RULES = """
rules:
  - alert: EmbeddingDrift
    when: {{drift: {{consecutive: 1}}}}
    labels: {{severity: warning}}
    annotations: {{summary: "{{{{ $labels.service }}}} drifts from {{{{ $labels.reference }}}}"}}
    retrain: {{cooldown: 1h}}
retraining:
  command: ["{python}", "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])",
            "{{job_file}}", "{ran}"]
route: {{receiver: hook, group_wait: 0s, group_interval: 1s}}
receivers:
  - name: hook
    webhook: {{url: "{hook}", secret: "${{HOOK_SECRET}}"}}
alertmanagers:
  - url: {alertmanager}
"""


def key(server: ServerProcess, role: str = "admin", name: str = "") -> str:
    made = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "keys", "create", "--project", "default",
         "--role", role, "--name", name, "--data", str(server.data)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    return made.stdout.split()[-1]


def get(server: ServerProcess, path: str, **params: Any) -> Any:
    response = httpx.get(
        server.url + path,
        params=params,
        headers={"Authorization": f"Bearer {server.read_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["items"]


@needs_alertmanager
def test_serve_detects_the_shift_alerts_and_resolves(tmp_path: Path) -> None:
    receiver = Receiver(secret=SECRET).start()
    manager = Alertmanager(tmp_path / "am", receiver.url + "/alertmanager")
    ran = tmp_path / "retrain-ran.json"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.format(
            python=sys.executable, ran=ran, hook=receiver.url + "/hook", alertmanager=manager.url
        )
    )
    server = start_server(
        tmp_path / "data",
        env={
            "DRIFTLINE_DETECTORS__ENABLED": "true",
            "DRIFTLINE_DETECTORS__INTERVAL_SECONDS": "1",
            "DRIFTLINE_DETECTORS__WINDOW_CALLS": "150",
            "DRIFTLINE_DETECTORS__PERMUTATIONS": "200",
            "DRIFTLINE_DETECTORS__CONSECUTIVE_WINDOWS": "1",
            # On a busy machine latency flags can fill the default daily budget early.
            "DRIFTLINE_DETECTORS__REVIEW_DAILY_BUDGET": "5000",
            "DRIFTLINE_ALERTS__RULES_FILE": str(rules),
            "DRIFTLINE_ALERTS__OUTBOX__TICK_SECONDS": "0.2",
            "HOOK_SECRET": SECRET,
        },
    )
    try:
        sdk.init(endpoint=server.url, api_key=server.ingest_key, service_name="bot")
        send(texts(MIX, 60, 0))
        deadline = time.monotonic() + 60
        while len(get(server, "/api/calls", limit=1000)) < 300:
            assert time.monotonic() < deadline, "the calls were not stored"
            time.sleep(0.2)
        made = httpx.post(
            server.url + "/api/references",
            json={"name": "bot-v1", "service": "bot"},
            headers={"Authorization": f"Bearer {key(server)}"},
            timeout=30,
        )
        assert made.status_code == 201, made.text

        send(texts(MIX, 30, 60))
        shifted = texts(("games", "fonts", "golang"), 50, 0)
        off_topic = texts(("doc",), 10, 100)
        for k, i in enumerate(range(10, 150, 15)):
            shifted[i] = (shifted[i][0], off_topic[k][1])
        send(shifted)

        deadline = time.monotonic() + 300
        while len(windows := get(server, "/api/drift", reference="bot-v1")) < 2:
            assert time.monotonic() < deadline, "no drift windows: " + server.log.read_text()
            time.sleep(1)
        assert [w["drifting"] for w in windows] == [False, True]
        assert all(t["p_value"] < 0.01 for t in windows[1]["tests"])
        queue = get(server, "/api/review-queue", source="flag", limit=1000)
        reasons = {q["output_text"]: q["reasons"] for q in queue}
        queued = [reasons[text] for _, text in off_topic if text in reasons]
        assert len(queued) >= 8  # the off-topic answers are queued, with why
        assert all({"low_relevance", "novel"} & set(r) for r in queued)
        # ... and wait in the review UI for a reviewer of the project.
        reviewer = {"Authorization": f"Bearer {key(server, 'review', 'alice')}"}
        page = httpx.get(server.url + "/review", headers=reviewer, timeout=30)
        assert page.status_code == 200 and page.text.count('data-href="/review/items/') >= 8
        overview = httpx.get(server.url + "/review/overview", headers=reviewer, timeout=30).text
        assert overview.count("<polyline") >= 6  # the windows' p-values and effects, the calls

        # The drift alert arrives signed at the webhook and in Alertmanager, and retrains.
        [alert] = get(server, "/api/alerts", state="firing")
        assert alert["rule"] == "EmbeddingDrift" and alert["labels"]["reference"] == "bot-v1"
        fired = wait_for(lambda: [r for r in receiver.delivered if r.path == "/hook"], "no webhook")
        assert fired[0].verified is True
        assert fired[0].json()["alerts"][0]["fingerprint"] == alert["fingerprint"]
        assert fired[0].json()["alerts"][0]["annotations"]["summary"] == "bot drifts from bot-v1"
        shown = wait_for(manager.alerts, "nothing in Alertmanager")
        assert [a["fingerprint"] for a in shown] == [alert["fingerprint"]]
        [job] = wait_for(
            lambda: [j for j in get(server, "/api/retrain-jobs") if j["status"] != "running"],
            "the retraining command did not finish",
        )
        assert (job["rule"], job["status"], job["exitCode"]) == ("EmbeddingDrift", "succeeded", 0)
        assert orjson.loads(ran.read_bytes())["id"] == job["id"]

        # Traffic back to normal: the next window does not drift and the alert resolves.
        send(texts(MIX, 30, 90))
        resolved = wait_for(
            lambda: [
                r for r in receiver.delivered
                if r.path == "/hook" and r.json()["status"] == "resolved"
            ],
            "no resolved notification: " + server.log.read_text(),
            timeout=240,  # before pytest's own 300 s, so the message says what hung
        )  # fmt: skip
        assert resolved[0].json()["alerts"][0]["fingerprint"] == alert["fingerprint"]
        assert get(server, "/api/alerts", state="firing") == []
        wait_for(lambda: manager.alerts() == [], "still active in Alertmanager")
        assert len(get(server, "/api/retrain-jobs")) == 1
    finally:
        sdk.shutdown()
        stop_server(server)
        manager.stop()
        receiver.stop()
