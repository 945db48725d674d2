"""Alert benchmark: how soon a drift reaches a webhook, and how fast the outbox delivers.

* **drift to webhook**: a real `driftline serve` with detectors and a rules file, fed with the
  SDK: a reference of 500 calls, then a topic shift; the time from sending the first drifted
  call to the signed webhook arriving at a local receiver. On the **default** schedule (detector
  pass every 60 s, 500-call windows, 2 drifting windows in a row, 500 permutations, evaluation
  every 15 s, `group_wait` 30 s) and on a **fast** one (1 s passes, 50-call windows, 1 window,
  200 permutations, 1 s evaluation, no `group_wait`);
* **outbox throughput**: signed webhook notifications per second from a chDB-backed `Outbox`
  (8 workers) to a local HTTP receiver, every delivery stored with its attempt.

    python bench/alerts.py [--schedules default fast] [--runs 1] [--notifications 2000]
                           [--record PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench import record  # noqa: E402
from driftline import sdk  # noqa: E402
from driftline.alerts.config import OutboxSettings  # noqa: E402
from driftline.alerts.notifiers import Message, WebhookSender  # noqa: E402
from driftline.alerts.outbox import Outbox  # noqa: E402
from driftline.store import migrate, open_store  # noqa: E402
from tests.alerts.conftest import SECRET  # noqa: E402
from tests.alerts.receiver import Receiver  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402
from tests.detectors.conftest import MIX, send, texts  # noqa: E402

OUTBOX_WORKERS = 8
SHIFTED = ("games", "fonts", "golang", "graphics", "hamradio", "haskell", "java", "kde", "kernel")
SCHEDULES: dict[str, dict[str, Any]] = {
    "default": {
        "env": {},
        "window": 500,
        "consecutive": 2,
        "group_wait": "30s",
        "about": "60 s passes, 500-call windows, 2 windows in a row, 500 permutations, 15 s "
        "evaluation, `group_wait` 30 s",
        "target_s": 120,
    },
    "fast": {
        "env": {
            "DRIFTLINE_DETECTORS__INTERVAL_SECONDS": "1",
            "DRIFTLINE_DETECTORS__WINDOW_CALLS": "50",
            "DRIFTLINE_DETECTORS__CONSECUTIVE_WINDOWS": "1",
            "DRIFTLINE_DETECTORS__PERMUTATIONS": "200",
            "DRIFTLINE_ALERTS__EVALUATION_INTERVAL": "1",
        },
        "window": 50,
        "consecutive": 1,
        "group_wait": "0s",
        "about": "1 s passes, 50-call windows, 1 window, 200 permutations, 1 s evaluation, "
        "`group_wait` 0",
        "target_s": 10,
    },
}
RULES = """
rules:
  - alert: EmbeddingDrift
    when: {{drift: {{consecutive: {consecutive}}}}}
route: {{receiver: hook, group_wait: {group_wait}}}
receivers:
  - name: hook
    webhook: {{url: "{url}", secret: "{secret}"}}
"""


def _key(data: Path, role: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "keys", "create", "--project", "default",
         "--role", role, "--data", str(data)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return made.stdout.split()[-1]


def _embedded(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("driftline_embedded_calls_total "):
            return float(line.split()[1])
    return 0.0


def drift_to_webhook(schedule: str) -> dict[str, float]:
    """Seconds from the first drifted call sent to the webhook received, with stage times."""
    plan = SCHEDULES[schedule]
    with tempfile.TemporaryDirectory() as tmp, Receiver(secret=SECRET) as receiver:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(
            RULES.format(
                consecutive=plan["consecutive"],
                group_wait=plan["group_wait"],
                url=receiver.url + "/hook",
                secret=SECRET,
            )
        )
        env = {"DRIFTLINE_DETECTORS__ENABLED": "true", "DRIFTLINE_ALERTS__RULES_FILE": str(rules)}
        server = start_server(Path(tmp) / "data", env={**env, **plan["env"]})
        try:
            sdk.init(endpoint=server.url, api_key=server.ingest_key, service_name="bot")
            send(texts(MIX, 100, 0))
            made = httpx.post(
                server.url + "/api/references",
                json={"name": "bot-v1", "service": "bot"},
                headers={"Authorization": f"Bearer {_key(server.data, 'admin')}"},
                timeout=30,
            )
            made.raise_for_status()
            while _embedded(server.url) < 500:  # steady state: the reference is embedded
                time.sleep(0.5)
            needed = plan["window"] * plan["consecutive"]
            drifted = texts(SHIFTED, -(-needed // len(SHIFTED)), 0)[:needed]
            started = time.monotonic()
            send(drifted)
            sent = time.monotonic() - started
            read = {"Authorization": f"Bearer {server.read_key}"}
            stages: dict[str, float] = {}
            checks = {
                "embedded": lambda: _embedded(server.url) >= 500 + needed,
                "drift_found": lambda: sum(w["drifting"] for w in httpx.get(
                    server.url + "/api/drift", headers=read, timeout=30).json()["items"])
                >= plan["consecutive"],
                "alert_firing": lambda: bool(httpx.get(
                    server.url + "/api/alerts", params={"state": "firing"}, headers=read,
                    timeout=30).json()["items"]),
            }  # fmt: skip
            while not receiver.delivered:
                for stage, check in checks.items():
                    if stage not in stages and check():
                        stages[stage] = time.monotonic() - started
                if time.monotonic() > started + 600:
                    raise RuntimeError("no webhook in 10 minutes: " + server.log.read_text())
                time.sleep(0.25)  # light polling: the server shares the machine
            total = time.monotonic() - started
            assert receiver.delivered[0].verified
        finally:
            sdk.shutdown()
            stop_server(server)
    return {"seconds": total, "sending_seconds": sent, "drifted_calls": needed, **stages}


def outbox_throughput(count: int) -> dict[str, float]:
    """Notifications per second through a chDB-backed outbox to a local receiver."""
    body = orjson.dumps(
        {
            "version": "4",
            "status": "firing",
            "alerts": [{"labels": {"alertname": "X"}, "annotations": {"summary": "x" * 600}}] * 2,
        }
    )
    with tempfile.TemporaryDirectory() as tmp, Receiver(secret=SECRET) as receiver:
        store = open_store(Path(tmp) / "data")
        migrate(store)
        with httpx.Client() as client:
            sender = WebhookSender(client, receiver.url + "/hook", SECRET, 10.0)
            outbox = Outbox(store, lambda _m: sender, OutboxSettings(workers=OUTBOX_WORKERS))
            now = time.time()
            messages = [
                Message(f"msg_{i:08d}", "default", "hook", "webhook", "g", body, now)
                for i in range(count)
            ]
            started = time.monotonic()
            outbox.enqueue(messages)
            enqueued = time.monotonic() - started
            while len(receiver.delivered_ids) < count:
                outbox.deliver_due()
            seconds = time.monotonic() - started
            outbox.close()
        stored = store.query(
            "SELECT count() AS n FROM notifications FINAL WHERE status = 'delivered'"
        )
        store.close()
    assert stored[0]["n"] == count and max(receiver.delivered_ids.values()) == 1
    return {
        "notifications": count,
        "per_second": count / seconds,
        "enqueue_per_second": count / enqueued,
        "body_bytes": len(body),
    }


def tables(latency: dict[str, list[dict[str, float]]], outbox: dict[str, float]) -> list[dict]:
    def median(runs: list[dict[str, float]], key: str) -> float | None:
        got = [r[key] for r in runs if key in r]
        return statistics.median(got) if got else None

    rows = []
    for name, runs in latency.items():
        seconds = [r["seconds"] for r in runs]
        plan = SCHEDULES[name]
        rows.append(
            [name, plan["about"], len(runs), int(runs[0]["drifted_calls"]),
             median(runs, "sending_seconds"), median(runs, "embedded"),
             median(runs, "drift_found"), median(runs, "alert_firing"),
             statistics.median(seconds), min(seconds), max(seconds), plan["target_s"],
             statistics.median(seconds) < plan["target_s"]]
        )  # fmt: skip
    return [
        record.table(
            "First drifted call sent → signed webhook received (stages: when polling the API "
            "first saw them; medians over the runs)",
            [record.col("schedule"), record.col("settings"), record.col("runs"),
             record.col("drifted calls", fmt=",d"), record.col("sending", "s", ".1f"),
             record.col("embedded", "s", ".1f"), record.col("drift found", "s", ".1f"),
             record.col("alert firing", "s", ".1f"), record.col("**webhook**", "s", ".1f"),
             record.col("min", "s", ".1f"), record.col("max", "s", ".1f"),
             record.col("target: under", "s"), record.col("met")],
            rows,
        ),
        record.table(
            "Outbox: signed webhook notifications (Alertmanager v4 bodies) to a local receiver, "
            "each delivery stored as a row version plus an attempt row; every webhook-id answered "
            "2xx exactly once",
            [record.col("notifications", fmt=",d"), record.col("body", "bytes", ",d"),
             record.col("**delivered**", "/s", ",.0f"), record.col("enqueued", "/s", ",.0f")],
            [[outbox["notifications"], outbox["body_bytes"], outbox["per_second"],
              outbox["enqueue_per_second"]]],
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", nargs="+", default=["default", "fast"], choices=SCHEDULES)
    parser.add_argument("--runs", type=int, default=1, help="runs per schedule")
    parser.add_argument("--notifications", type=int, default=2000)
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("alerts", args.record, ["chdb", "httpx", "standardwebhooks"])
    outbox = outbox_throughput(args.notifications)
    print(json.dumps({"outbox": outbox}), flush=True)
    latency: dict[str, list[dict[str, float]]] = {}
    for schedule in args.schedules:
        for _ in range(args.runs):
            result = drift_to_webhook(schedule)
            print(json.dumps({schedule: result}), flush=True)
            latency.setdefault(schedule, []).append(result)
    settings = {"schedules": args.schedules, "runs": args.runs, "workers": OUTBOX_WORKERS}
    recorder.write(tables(latency, outbox), settings)


if __name__ == "__main__":
    main()
