"""The retraining trigger: a firing alert of a rule with `retrain:` records a `retrain_jobs` row
(why, the evidence, the data it will train on) and starts the configured pipeline, a local
command or a signed webhook to the team's training system, at most once per cooldown."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from driftline.alerts import tables
from driftline.alerts.metrics import AlertMetrics
from driftline.alerts.notifiers import Message
from driftline.alerts.rules import RetrainingLauncher, Rule
from driftline.alerts.state import Alert
from driftline.alerts.timestamps import ms_column, parse_rfc3339, rfc3339, seconds
from driftline.detectors.tables import queue_size
from driftline.review.feedback import FROM_APPS, REVIEWED
from driftline.review.tables import feedback_until
from driftline.store import Store, env
from driftline.store.files import private_folder

log = logging.getLogger("driftline.alerts")
RETRAIN_RECEIVER = "retraining"
_OUTPUT_TAIL = 8192


# What a retraining command sees of the server's environment: the system's basics, the model
# caches, and the pipeline's own settings (examples/retrain.sh). Not the rest: the server's
# environment holds the ClickHouse URL with its password and the notifiers' secrets.
JOB_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "VIRTUAL_ENV", "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "HF_HOME", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "TORCH_HOME",
    env.API_KEY, env.URL, env.CONFIG, "DRIFTLINE_MODELS", "DRIFTLINE_METHOD",
    "DRIFTLINE_REWARD_MODEL",
)  # fmt: skip


class RetrainTrigger:
    def __init__(
        self,
        store: Store,
        launcher: RetrainingLauncher,
        enqueue: Callable[[list[Message]], int],
        folder: Path,
        metrics: AlertMetrics | None = None,
        api_url: str = "",
    ) -> None:
        self.store = store
        self.api_url = api_url  # where a launched pipeline reaches driftline's API
        self.launcher = launcher
        self.enqueue = enqueue
        self.folder = folder
        self.metrics = metrics
        self._threads: list[threading.Thread] = []
        self._last: dict[tuple[str, str], float | None] = {}  # (project, rule) -> last job
        # Jobs a previous process was running when it stopped end as `interrupted`.
        tables.interrupt_running_jobs(store)

    def fire(self, rule: Rule, alert: Alert, now: float, fresh: bool = True) -> str | None:
        """Record and launch a job for the firing `alert`, unless the rule's cooldown still
        runs (a `fresh` alert, one that has just fired, is counted as skipped then)."""
        assert rule.retrain is not None
        key = (alert.project, rule.alert)
        if key not in self._last:
            self._last[key] = seconds(tables.last_job(self.store, *key))
        last = self._last[key]
        if last is not None and now - last < rule.retrain.cooldown:
            if fresh:
                log.info("retraining for %s/%s skipped: in cooldown", *key)
                self._count(rule.alert, "skipped_cooldown")
            return None
        self._last[key] = now
        job = {
            "id": "job_" + secrets.token_hex(8),
            "project": alert.project,
            "rule": rule.alert,
            "fingerprint": alert.fingerprint,
            "reason": alert.annotations.get("summary") or f"{rule.alert} fired",
            "labels": alert.labels,
            "evidence": alert.evidence,
            "snapshot": self._snapshot(alert.project, now),
            "created_at": rfc3339(now),
        }
        if self.launcher.command is not None:
            self._save(job, "command", "running", now)
            self._start_command(job, now)
        else:
            self._save(job, "webhook", "sent", now)
            self.enqueue([self._webhook(job, now)])
        self._count(rule.alert, "started")
        return str(job["id"])

    def wait(self, timeout: float | None = None) -> None:
        """Wait for launched commands to finish (tests, shutdown)."""
        for thread in self._threads:
            thread.join(timeout)

    # -- launching -----------------------------------------------------------------------------

    def _start_command(self, job: dict[str, Any], now: float) -> None:
        private_folder(self.folder)
        job_file = self.folder / f"{job['id']}.json"
        job_file.write_text(json.dumps(job, indent=2, sort_keys=True))
        fields = {"job_id": job["id"], "project": job["project"], "rule": job["rule"],
                  "job_file": str(job_file)}  # fmt: skip
        assert self.launcher.command is not None
        argv = [part.format_map(fields) for part in self.launcher.command]
        passed = (*JOB_ENVIRONMENT, *self.launcher.pass_env)
        job_env = {
            **{name: os.environ[name] for name in passed if name in os.environ},
            env.RETRAIN_JOB_ID: job["id"],
            env.RETRAIN_JOB_FILE: str(job_file),
            env.PROJECT: job["project"],
            env.URL: os.environ.get(env.URL) or self.api_url,
        }
        if self.launcher.api_key_file is not None:
            try:
                job_env[env.API_KEY] = self._project_key(job["project"])
            except OSError as exc:
                self._fail(job, f"no key for project {job['project']!r}: {exc}")
                return
        thread = threading.Thread(
            target=self._run, args=(job, argv, job_env), name=f"retrain-{job['id']}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _project_key(self, project: str) -> str:
        """The project's key from `api_key_file`; OSError when it is missing or empty."""
        assert self.launcher.api_key_file is not None
        path = Path(self.launcher.api_key_file.format(project=project))
        key = path.read_text().strip()
        if not key:
            raise OSError(f"{path} is empty")
        return key

    def _fail(self, job: dict[str, Any], output: str) -> None:
        log.error("retraining job %s not started: %s", job["id"], output)
        self._save(job, "command", "failed", time.time(), None, output)
        self._count(job["rule"], "failed")

    def _run(self, job: dict[str, Any], argv: list[str], env: dict[str, str]) -> None:
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=self.launcher.timeout,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            status = "succeeded" if done.returncode == 0 else "failed"
            output, code = (done.stdout + done.stderr)[-_OUTPUT_TAIL:], done.returncode
        except subprocess.TimeoutExpired as exc:
            status, code = "failed", None
            output = f"timed out after {exc.timeout}s"
        except OSError as exc:
            status, code, output = "failed", None, f"cannot start {argv[0]!r}: {exc.strerror}"
        log.info("retraining job %s %s (exit %s)", job["id"], status, code)
        try:
            self._save(job, "command", status, time.time(), code, output)
        except Exception:
            log.exception("could not record the end of retraining job %s", job["id"])
        self._count(job["rule"], status)

    def _webhook(self, job: dict[str, Any], now: float) -> Message:
        body = {"type": "driftline.retrain", "timestamp": rfc3339(now), "data": job}
        return Message(
            id="msg_" + job["id"],
            project=job["project"],
            receiver=RETRAIN_RECEIVER,
            kind="retrain",
            group_key=job["rule"],
            body=orjson.dumps(body),
            created_at=now,
        )

    # -- records -------------------------------------------------------------------------------

    def _snapshot(self, project: str, now: float) -> dict[str, Any]:
        """What a training run started now would read: reviewers' feedback up to this moment
        (and how much the apps sent, which exports read only when asked)."""
        until = round(now * 1000) * 1_000_000
        rows, until_ns = feedback_until(self.store, project, until, REVIEWED)
        app_rows, _ = feedback_until(self.store, project, until, FROM_APPS)
        return {
            "feedback_rows": rows,
            "feedback_until": rfc3339(until_ns // 1_000_000 / 1000) if rows else None,
            "app_feedback_rows": app_rows,
            "review_queue_rows": queue_size(self.store, project),
        }

    def _save(
        self,
        job: dict[str, Any],
        launcher: str,
        status: str,
        now: float,
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        created = self._created(job)
        tables.insert_retrain_jobs(
            self.store,
            {
                "project_id": [job["project"]],
                "id": [job["id"]],
                "rule": [job["rule"]],
                "fingerprint": [job["fingerprint"]],
                "reason": [job["reason"]],
                "evidence": [json.dumps({"labels": job["labels"], **job["evidence"]})],
                "snapshot": [json.dumps(job["snapshot"])],
                "launcher": [launcher],
                "status": [status],
                "exit_code": [exit_code],
                "output": [output],
                "created_at": ms_column([created]),
                "updated_at": ms_column([max(now, created + 0.001 * (status != "running"))]),
            },
        )

    @staticmethod
    def _created(job: dict[str, Any]) -> float:
        return parse_rfc3339(job["created_at"])

    def _count(self, rule: str, status: str) -> None:
        if self.metrics:
            self.metrics.retrain_jobs.labels(rule, status).inc()
