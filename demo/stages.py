"""The demo's stages, in order: each does one step of the loop against the running service and
reports it as it happens. `Demo` holds what the stages share."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import webbrowser
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.demo import corpus as debian
from driftline.demo import tiny_model
from driftline.demo.llm import CANNED, DRIFTED, StandInModel
from driftline.demo.progress import Progress
from driftline.demo.receiver import Notification, WebhookReceiver
from driftline.demo.reviewer import ScriptedReviewer
from driftline.demo.service import Api, Children, DemoError, Service, child_env, wait_until
from driftline.store import env

REFERENCE = "helper-baseline"
ALPHA = 0.05
DECIDES = "mmd"  # the detectors' default: the test that decides whether a window drifts
DRIFT_ALERT = "AnswersDrift"
PROMOTED_ALERT = "ModelPromoted"
RULES = """\
rules:
  - alert: {drift}
    when: {{drift: {{consecutive: 2}}}}
    labels: {{severity: warning}}
    annotations:
      summary: "{{{{ $labels.service }}}} answers unlike reference {{{{ $labels.reference }}}}"
  - alert: {promoted}
    when: {{model: {{status: promoted, over: 1h}}}}
    labels: {{severity: info}}
    annotations:
      summary: "{{{{ $labels.version }}}} ({{{{ $labels.method }}}}) is in service"
route: {{receiver: on-call, group_by: [alertname, version], group_wait: 0s, group_interval: 1s}}
receivers:
  - name: on-call
    webhook: {{url: "{url}", secret: "${{DEMO_WEBHOOK_SECRET}}"}}
"""
# A model this small trains faster on one thread than on several that wait for each other.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Sizes:
    """How much the demo does: calls per phase, the window, the reviewed batch, the model."""

    window: int  # calls per tested window; the warm-up is 1.5 windows, the drift 2
    batch: int  # queued calls the reviewer judges
    hidden: int
    layers: int
    epochs: int

    @property
    def warmup(self) -> int:
        return self.window * 3 // 2


FAST = Sizes(window=100, batch=60, hidden=32, layers=2, epochs=3)
FULL = Sizes(window=250, batch=120, hidden=64, layers=2, epochs=4)


@dataclass
class Demo:
    root: Path
    sizes: Sizes
    progress: Progress
    children: Children
    service: Service
    model: StandInModel
    hook: WebhookReceiver
    person_reviews: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # what later stages need
    in_service: Future[str] | None = None  # the model in service, registered as v1
    shown_windows: set[str] = field(default_factory=set)
    _api: Api | None = None

    @property
    def api(self) -> Api:
        """The service's API with the admin key."""
        if self._api is None:
            self._api = Api(self.service.url, self.keys["admin"])
        return self._api

    @property
    def models(self) -> Path:
        return self.root / "models"

    def server_flags(self) -> list[str]:
        return ["--url", self.service.url, "--key", self.keys["admin"]]

    def stored(self) -> int:
        return int(self.api.metric("driftline_llm_calls_total"))

    def embedded(self) -> int:
        return int(self.api.metric("driftline_embedded_calls_total"))

    def windows(self) -> list[dict[str, Any]]:
        return self.api.items("/api/drift", reference=REFERENCE)

    def traffic(self, calls: int, mix: dict[str, float], seed: int) -> None:
        """Run the app for `calls` questions, then wait until driftline has stored them."""
        before = self.stored()
        report: dict[str, Any] = {}
        with open(self.root / "app.log", "a") as log:
            app = self.children.start(
                [sys.executable, "-m", "driftline.demo.app", "--model-url", self.model.base_url,
                 "--calls", str(calls), "--seed", str(seed),
                 "--mix", ",".join(f"{k}={v}" for k, v in mix.items())],
                stdout=subprocess.PIPE, stderr=log, cwd=self.root,
                env=child_env(DRIFTLINE_ENDPOINT=self.service.url,
                              DRIFTLINE_API_KEY=self.keys["ingest"]),
            )  # fmt: skip
            assert app.stdout is not None
            for line in app.stdout:
                report = json.loads(line)
                self.progress.tick(f"app: {report['sent']}/{calls} questions answered",
                                   sent=report["sent"])  # fmt: skip
            self.children.stop(app)
        if app.returncode != 0:
            raise DemoError(f"the app failed ({app.returncode}); see {self.root / 'app.log'}")
        if not report.get("flushed"):
            raise DemoError(f"the app could not send its spans: {report}")

        def all_stored() -> bool:
            stored = self.stored()
            self.progress.tick(f"stored {stored - before}/{calls} calls, "
                               f"embedded {self.embedded()} in all", stored=stored)  # fmt: skip
            return stored >= before + calls

        wait_until(all_stored, f"driftline did not store the app's {calls} calls", 60,
                   alive=self.service.check)  # fmt: skip

    def wait_windows(self, count: int, timeout: float = 180) -> list[dict[str, Any]]:
        """The reference's windows once there are `count` of them, reporting each new one."""

        def tested() -> list[dict[str, Any]] | None:
            windows = self.windows()
            for number, w in enumerate(windows, 1):
                if w["window_key"] not in self.shown_windows:
                    self.shown_windows.add(w["window_key"])
                    self.progress.note(describe_window(number, w), **window_facts(number, w))
            if len(windows) < count:
                self.progress.tick(f"embedded {self.embedded()} calls; "
                                   f"{len(windows)}/{count} windows tested")  # fmt: skip
                return None
            return windows

        return wait_until(tested, f"the detectors did not test {count} windows", timeout,
                          every=1, alive=self.service.check)  # fmt: skip


def describe_window(number: int, window: dict[str, Any]) -> str:
    [test] = [t for t in window["tests"] if t["detector"] == DECIDES]
    verdict = "drifts" if window["drifting"] else "no drift"
    sign = "<" if test["p_value"] < ALPHA else ">="
    others = ", ".join(
        f"{t['detector']} {t['p_value']:.3f}" for t in window["tests"] if t is not test
    )
    return (
        f"window {number} ({window['n_current']} calls): {test['detector']} p={test['p_value']:.3f}"
        f" {sign} alpha {ALPHA}: {verdict}"
        + (f", {window['consecutive']} in a row" if window["drifting"] else "")
        + f"; diagnostics p: {others}; {window['flagged']} calls flagged"
    )


def window_facts(number: int, window: dict[str, Any]) -> dict[str, Any]:
    return {
        "window": number,
        "drifting": window["drifting"],
        "consecutive": window["consecutive"],
        "p_values": {t["detector"]: t["p_value"] for t in window["tests"]},
        "flagged": window["flagged"],
    }


# -- the stages -----------------------------------------------------------------------------


def start_service(demo: Demo) -> None:
    demo.progress.start("service", "Start driftline: `driftline serve` on a new data folder")
    demo.service.start()
    demo.progress.note(f"listening on {demo.service.url}; data in {demo.service.data}")
    keys = {"admin": ("admin", "demo"), "ingest": ("ingest", debian.SERVICE),
            "review": ("review", "scripted-reviewer")}  # fmt: skip
    if demo.person_reviews:
        keys["you"] = ("review", "you")
    made = {name: demo.service.spawn("keys", "create", "--project", env.DEFAULT_PROJECT,
                                     "--role", role, "--name", note,
                                     "--data", str(demo.service.data))
            for name, (role, note) in keys.items()}  # fmt: skip
    demo.keys.update({name: demo.service.finish(p)[1].strip() for name, p in made.items()})
    demo.progress.note(f"keys made with `driftline keys create`: {', '.join(keys)}")
    demo.in_service = ThreadPoolExecutor(1, "model").submit(model_in_service, demo)
    demo.progress.note("the model in service is built and registered as v1 in the background")
    demo.progress.note(f"the stand-in model answers at {demo.model.base_url}; "
                       f"alerts go to the webhook receiver at {demo.hook.url}")  # fmt: skip
    demo.progress.done(f"driftline is up at {demo.service.url}", url=demo.service.url,
                       data=str(demo.service.data))  # fmt: skip


def warm_up(demo: Demo) -> None:
    n = demo.sizes.warmup
    demo.progress.start("warmup", f"Warm-up: the app answers {n} questions about "
                        f"{', '.join(debian.BEFORE)} packages")  # fmt: skip
    demo.traffic(n, dict(debian.BEFORE), seed=1)
    calls = demo.api.items("/api/calls", limit=1)
    spans = demo.api.get(f"/api/traces/{calls[0]['trace_id']}")["spans"]
    shown = [f"{s['span_name']} ({s['type'].replace('_', ' ')}, {s['duration_ms']:.0f} ms)"
             for s in spans]  # fmt: skip
    demo.progress.note(f"each answer is one trace: {' > '.join(shown)}")
    stored, embedded = demo.stored(), demo.embedded()
    demo.progress.done(f"{stored} calls stored, {embedded} embedded so far", stored=stored,
                       embedded=embedded)  # fmt: skip


def freeze_reference(demo: Demo) -> None:
    demo.progress.start("reference", f"Freeze the warm-up's calls as reference {REFERENCE!r}")
    made = demo.api.post("/api/references", {"name": REFERENCE, "service": debian.SERVICE})
    demo.progress.done(
        f"reference {made['name']} v{made['version']}: {made['calls']} calls; each next "
        f"{demo.sizes.window} calls form a window tested against it",
        reference=made["name"], calls=made["calls"],
    )  # fmt: skip


def normal_traffic(demo: Demo) -> None:
    n = demo.sizes.window
    demo.progress.start("normal", f"Business as usual: {n} more questions of the same mix")
    demo.traffic(n, dict(debian.BEFORE), seed=2)
    [window] = demo.wait_windows(1)
    demo.progress.done(
        "window 1 " + (f"drifts (at alpha {ALPHA} one window in {1 / ALPHA:.0f} does by chance)"
                       if window["drifting"] else "matches the reference"),
        drifting=window["drifting"],
    )  # fmt: skip


def inject_drift(demo: Demo) -> None:
    n = 2 * demo.sizes.window
    demo.progress.start("drift", f"Drift: users turn to games, the model goes off topic and "
                        f"slows down ({n} questions)")  # fmt: skip
    demo.model.drift(DRIFTED)
    slow, usual = DRIFTED.slow_seconds, DRIFTED.seconds
    demo.progress.note(
        f"the model: {DRIFTED.off_topic:.0%} of answers are one of {CANNED} canned descriptions "
        "of font packages, "
        f"{DRIFTED.slow:.0%} of calls take {slow[0]}-{slow[1]} s instead of "
        f"{usual[0] * 1000:.0f}-{usual[1] * 1000:.0f} ms; the users: "
        f"{debian.AFTER['games']:.0%} of questions are about games"
    )
    demo.traffic(n, dict(debian.AFTER), seed=3)
    windows = demo.wait_windows(3)
    drifting = [w for w in windows[1:] if w["drifting"]]
    demo.facts["drift_window"] = (drifting or windows[1:])[-1]["window_key"]
    demo.progress.done(
        f"drift found in {len(drifting)} of the 2 windows since; {demo.model.off_topic} "
        f"answers were off topic; {demo.embedded()} calls embedded in all",
        drifting_windows=len(drifting), off_topic_answers=demo.model.off_topic,
    )  # fmt: skip


def show_findings(demo: Demo) -> None:
    demo.progress.start("findings", "Findings: what the tests saw in the last drifting window")
    found = demo.api.items("/api/findings", reference=REFERENCE, limit=100)
    latest = [f for f in found if f["window_key"] == demo.facts["drift_window"]]
    for f in sorted(latest, key=lambda f: f["detector"]):
        demo.progress.note(describe_finding(f), detector=f["detector"], p_value=f["p_value"],
                           decides=f["rejected"])  # fmt: skip
    demo.progress.done(f"{len(latest)} tests reported", tests=len(latest))


def describe_finding(f: dict[str, Any]) -> str:
    head = f"{f['detector']}: statistic {f['statistic']:.3g}, p={f['p_value']:.3f}"
    details = f.get("details") or {}
    if f["detector"] == "topics" and details.get("clusters"):
        grew = max(details["clusters"], key=lambda c: c["change"])
        example = (grew.get("examples") or [""])[0].split(".")[0][:70]
        return (f"{head}: a topic grew from {grew['reference_share']:.0%} to "
                f"{grew['current_share']:.0%} of calls, e.g. \"{example}...\"")  # fmt: skip
    if f["detector"] == "classifier":
        return (
            f"{head}: a classifier tells the window from the reference at AUC {f['statistic']:.2f}"
        )
    if f["detector"] == DECIDES:
        return (
            f"{head} (decides, Westfall-Young adjusted p={details.get('adjusted_p_value', 0):.3f})"
        )
    return head


def fill_queue(demo: Demo) -> None:
    demo.progress.start("queue", "Review queue: flagged calls by priority, plus an audit sample")
    corpus = debian.load()

    def queued() -> list[dict[str, Any]]:
        return demo.api.items("/api/review-queue", reference=REFERENCE, limit=1000)

    items = wait_until(queued, "nothing was queued for review", 60)
    reasons = Counter(r for item in items for r in item["reasons"])
    off = [i for i in items if judged_off_topic(corpus, i)]
    demo.progress.note("reasons: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    top = items[0]
    demo.progress.note(f"first in line (priority {top['priority']:.1f}): "
                       f"\"{top['input_text'][:60]}\" answered \"{top['output_text'][:60]}...\" "
                       f"({'; '.join(top['notes'].values())})")  # fmt: skip
    demo.progress.done(
        f"{len(items)} calls queued; {len(off)} of the {demo.model.off_topic} off-topic answers "
        "among them",
        queued=len(items), reasons=dict(reasons), off_topic_queued=len(off),
    )  # fmt: skip


def judged_off_topic(corpus: debian.Corpus, item: dict[str, Any]) -> bool:
    package = corpus.find(item.get("input_text") or "")
    return package is not None and item.get("output_text") != package.description


def alert_arrives(demo: Demo) -> None:
    demo.progress.start("alert", f"Alert: rule {DRIFT_ALERT} (2 drifting windows in a row) "
                        "notifies the on-call webhook")  # fmt: skip

    def delivered() -> list[Notification]:
        return [n for n in demo.hook.received
                if any(a["labels"].get("alertname") == DRIFT_ALERT for a in n.alerts)]  # fmt: skip

    [note, *_] = wait_until(delivered, f"no {DRIFT_ALERT} notification arrived", 60,
                            alive=demo.service.check)  # fmt: skip
    if not note.verified:
        raise DemoError("the alert's Standard Webhooks signature did not verify")
    alert = note.alerts[0]
    demo.progress.note(f"{alert['status']}: {alert['annotations'].get('summary', '')}")
    demo.progress.note(f"review link in the alert: {alert['annotations'].get('review_url', '')}")
    demo.progress.done(
        f"delivered as webhook {note.webhook_id}; its Standard Webhooks signature verified with "
        "the shared secret",
        alertname=DRIFT_ALERT, fingerprint=alert["fingerprint"], verified=note.verified,
    )  # fmt: skip


def review(demo: Demo) -> None:
    batch = demo.sizes.batch
    demo.progress.start("review", f"Review: the {batch} calls first in the queue are judged")
    items = demo.api.items("/api/review-queue", reference=REFERENCE, limit=batch)
    done_by_person: set[tuple[str, str]] = set()
    if demo.person_reviews:
        done_by_person = person_reviews(demo)
    reviewer = ScriptedReviewer(demo.service.url, demo.keys["review"], debian.load())
    corrections = 0
    try:
        for n, item in enumerate(items, 1):
            if (item["trace_id"], item["span_id"]) in done_by_person:
                continue
            corrections += "correction" in reviewer.judge(item)
            demo.progress.tick(f"scripted reviewer: {n}/{len(items)} judged, "
                               f"{corrections} corrected", judged=n)  # fmt: skip
    finally:
        reviewer.close()
    rows = demo.api.items("/api/feedback", source="review", limit=1000)
    demo.progress.done(
        f"{len(items)} calls judged, {corrections} answers corrected by the scripted reviewer; "
        f"{len(rows)} feedback rows stored",
        judged=len(items), corrections=corrections, feedback_rows=len(rows),
    )  # fmt: skip


def person_reviews(demo: Demo) -> set[tuple[str, str]]:
    """Open the review UI and wait for the person: the calls they judged."""
    url = f"{demo.service.url}/review"
    demo.progress.note(f"your turn: sign in at {url} with the review key {demo.keys['you']}")
    demo.progress.note(
        "judge a few calls (correct an off-topic answer: c, then Ctrl+Enter); press Enter "
        "here when done, and the scripted reviewer judges the rest of the batch"
    )
    webbrowser.open(url)
    finished = threading.Event()

    def enter_pressed() -> None:
        sys.stdin.readline()
        finished.set()

    threading.Thread(target=enter_pressed, daemon=True).start()
    while True:
        rows = demo.api.items("/api/feedback", source="review", limit=1000)
        mine = {(r["trace_id"], r["span_id"]) for r in rows if r.get("user") == "you"}
        if finished.wait(2):
            break
        demo.progress.tick(f"you have judged {len(mine)} calls", judged=len(mine))
    demo.progress.note(f"you judged {len(mine)} calls")
    return mine


def export(demo: Demo) -> None:
    demo.progress.start("export", "Export: the reviewers' corrections as DPO preference rows")
    out = demo.models / "exports" / "feedback.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot_id = demo.service.command(
        "export", "--format", "dpo", "--out", str(out), "--test-fraction", "0.3",
        *demo.server_flags(),
    ).strip()  # fmt: skip
    snapshot = demo.api.get(f"/api/datasets/{snapshot_id}")
    rows = snapshot["counts"]["rows"]
    demo.facts["snapshot"] = snapshot_id
    demo.progress.note(f"each row: the question, the correction as chosen, the off-topic "
                       f"answer as rejected ({out})")  # fmt: skip
    demo.progress.done(
        f"snapshot {snapshot_id}: {rows['train']} rows to train on, {rows['test']} held out "
        "for the gate",
        snapshot=snapshot_id, train_rows=rows["train"], test_rows=rows["test"],
    )  # fmt: skip


def model_in_service(demo: Demo) -> str:
    """Build the tiny model and register it as the version in service: what
    `driftline models register` says."""
    s = demo.sizes
    folder = demo.models / "v1"
    tiny_model.build(folder, debian.load().texts(), hidden=s.hidden, layers=s.layers)
    return demo.service.command("models", "register", str(folder), *demo.server_flags()).strip()


def finetune(demo: Demo) -> None:
    s = demo.sizes
    demo.progress.start("finetune", "Fine-tune: DPO on the snapshot, starting from the model "
                        "in service")  # fmt: skip
    assert demo.in_service is not None
    try:
        registered = demo.in_service.result(timeout=300)
    except TimeoutError:
        raise DemoError("the model in service was not built within 300 s") from None
    current = demo.models / "v1"
    demo.progress.note(f"the model in service: a tiny Llama ({s.layers} layers, hidden {s.hidden})"
                       f" built on the fly, `driftline models register`: {registered}")  # fmt: skip
    candidate = demo.models / "candidate"
    started = time.monotonic()
    process = demo.service.spawn(
        "finetune", "--snapshot", demo.facts["snapshot"], "--method", "dpo",
        "--model", str(current), "--out", str(candidate), "--quiet",
        "--set", "learning_rate=5e-3", "--set", f"epochs={s.epochs}", "--set", "batch_size=8",
        "--set", "max_length=256", *demo.server_flags(), **ONE_THREAD,
    )  # fmt: skip

    def trained() -> bool:
        runs = demo.api.items("/api/finetune-runs", limit=1)
        if runs:
            run = runs[0]
            loss = run["summary"].get("loss")
            demo.progress.tick(f"run {run['id']}: {run['status']}, step {run['step']}/"
                               f"{run['total_steps'] or '?'}"
                               + (f", loss {loss:.3f}" if loss is not None else ""),
                               step=run["step"])  # fmt: skip
        return process.poll() is not None

    wait_until(trained, "the fine-tune did not finish", 600, every=1)
    _, out = demo.service.finish(process)
    [run] = demo.api.items("/api/finetune-runs", limit=1)
    figures = run["summary"]
    demo.facts["candidate"] = candidate
    demo.progress.done(
        f"run {run['id']} {run['status']}: {run['step']} steps in "
        f"{time.monotonic() - started:.0f} s, loss {figures.get('loss', float('nan')):.3f}, "
        f"reward margin {figures.get('reward_margin', float('nan')):.3f}; candidate "
        f"{out.strip()} at {candidate}",
        run=run["id"], status=run["status"], steps=run["step"], version=out.strip(),
        figures={k: v for k, v in figures.items() if isinstance(v, int | float)},
    )  # fmt: skip


def gate(demo: Demo) -> None:
    demo.progress.start("gate", "Gate: the candidate against the model in service on the "
                        "held-out rows")  # fmt: skip
    process = demo.service.spawn(
        "finetune", "gate", "--candidate", str(demo.facts["candidate"]),
        "--baseline", str(demo.models / "v1"), "--snapshot", demo.facts["snapshot"],
        "--promote", "--json", *demo.server_flags(), **ONE_THREAD,
    )  # fmt: skip
    _, out = demo.service.finish(process, ok=(0, 1))  # 1: rejected, with its verdict
    if not out.strip():  # exit status 1 with no verdict: it failed, saying why in its log
        raise DemoError(f"`driftline finetune gate` failed; see {demo.root / 'finetune.log'}")
    verdict = json.loads(out)
    win = verdict["win_rate"]
    demo.progress.note(
        f"preference accuracy {verdict['preference_accuracy']:.2f}; win rate {win['rate']:.0%} "
        f"(95% CI {win['low']:.0%}-{win['high']:.0%}, n={win['n']}, by {win['source']})"
    )
    demo.facts["promoted"] = verdict["promote"]
    demo.progress.done(
        (f"{verdict['version']} passes and is promoted" if verdict["promote"] else
         f"{verdict['version']} rejected: {'; '.join(verdict['reasons'])}"),
        version=verdict["version"], promote=verdict["promote"], win_rate=win["rate"],
        preference_accuracy=verdict["preference_accuracy"], reasons=verdict["reasons"],
    )  # fmt: skip


def promoted(demo: Demo) -> None:
    demo.progress.start("promote", "In service: the model registry and the announcement")
    current = demo.api.get("/api/models/current")
    if not demo.facts["promoted"]:
        demo.progress.done(f"{current['version']} stays in service", version=current["version"])
        return

    def announced() -> list[Notification]:
        return [n for n in demo.hook.received for a in n.alerts
                if a["labels"].get("alertname") == PROMOTED_ALERT
                and a["labels"].get("version") == current["version"]]  # fmt: skip

    [note, *_] = wait_until(announced, f"no {PROMOTED_ALERT} notification arrived", 60,
                            alive=demo.service.check)  # fmt: skip
    demo.progress.note(f"{PROMOTED_ALERT} arrived at the webhook, signature "
                       + ("verified" if note.verified else "NOT verified"))  # fmt: skip
    demo.progress.done(
        f"{current['version']} ({current['method']}) is the current model",
        version=current["version"], method=current["method"], announced=note.verified,
    )  # fmt: skip


def summary(demo: Demo) -> None:
    demo.progress.start("summary", "Summary")
    url = demo.service.url
    urls = {
        "review queue": f"{url}/review",
        "overview (drift, flags, calls)": f"{url}/review/overview",
        "drift windows": f"{url}/api/drift?reference={REFERENCE}",
        "API docs": f"{url}/docs",
        "metrics": f"{url}/metrics",
    }
    for what, link in urls.items():
        demo.progress.note(f"{what:<32} {link}")
    reviewer = demo.keys.get("you", demo.keys["review"])
    demo.progress.note(f"sign in to the review UI with {reviewer}; "
                       f"the API takes the admin key {demo.keys['admin']}")  # fmt: skip
    closed = "the loop closed" if demo.facts["promoted"] else "done"
    demo.progress.done(f"{closed} in {demo.progress.elapsed:.0f} s", urls=urls,
                       keys=demo.keys, seconds=round(demo.progress.elapsed, 1))  # fmt: skip


STAGES: list[Callable[[Demo], None]] = [
    start_service, warm_up, freeze_reference, normal_traffic, inject_drift, show_findings,
    fill_queue, alert_arrives, review, export, finetune, gate, promoted, summary,
]  # fmt: skip
