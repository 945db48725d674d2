"""`driftline demo` from start to end: the folder it works in, the service, the stand-in model
and the webhook receiver around the stages, and cleaning all of it up however it ends."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import sys
import tempfile
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

from driftline.demo import corpus
from driftline.demo.llm import StandInModel
from driftline.demo.progress import Progress
from driftline.demo.receiver import WebhookReceiver
from driftline.demo.service import Children, DemoError, Service, free_port
from driftline.demo.stages import (
    ALPHA,
    DRIFT_ALERT,
    FAST,
    FULL,
    PROMOTED_ALERT,
    RULES,
    STAGES,
    Demo,
    Sizes,
)

# What the demo runs beyond the server: the detectors, the fine-tune and the app's client.
NEEDS = {"model2vec": "detectors", "trl": "finetune", "openai": "examples"}


@dataclass(frozen=True)
class Options:
    fast: bool = False
    as_json: bool = False
    open_browser: bool = False
    keep: bool = False
    folder: Path | None = None
    force: bool = False
    port: int = 0
    wait: bool = False


def run(options: Options) -> int:
    """Run every stage; the exit status (0 when the loop closed)."""
    progress = Progress(len(STAGES), options.as_json)
    try:
        check_installed()
        port = free_port(options.port)
        root, temporary = workspace(options.folder, options.force)
    except DemoError as exc:
        progress.fail(str(exc))
        return 2
    sizes = FAST if options.fast else FULL
    children = Children()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up as Ctrl-C does
    failed = False
    try:
        with WebhookReceiver() as hook, StandInModel(corpus.load()) as model:
            demo = Demo(
                root=root,
                sizes=sizes,
                progress=progress,
                children=children,
                service=Service(children, root, port, settings(root, sizes, hook)),
                model=model,
                hook=hook,
                person_reviews=options.open_browser,
            )
            try:
                for stage in STAGES:
                    stage(demo)
                if options.wait:
                    print("\nThe service stays up for you to look around; press Enter to stop.")
                    sys.stdin.readline()
            finally:
                children.close()  # before the model and the receiver the service talks to
                if demo.in_service is not None:
                    futures.wait([demo.in_service])  # it writes into the folder
        return 0
    except DemoError as exc:
        failed = True
        progress.fail(f"{exc}\n(the demo's folder is kept for its logs: {root})")
        return 1
    except KeyboardInterrupt:
        progress.fail("interrupted")
        return 130
    finally:
        if temporary and not options.keep and not failed:
            shutil.rmtree(root, ignore_errors=True)
        elif not options.as_json and not failed:
            print(f"\nThe demo's folder is kept: {root} (`driftline serve --data {root / 'data'}`)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def check_installed() -> None:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        extras = ",".join(sorted({NEEDS[m] for m in missing}))
        raise DemoError(
            f"the demo runs the whole loop and needs {', '.join(missing)}: "
            f"pip install 'driftline[all]' (or the {extras} extras)"
        )


def workspace(folder: Path | None, force: bool) -> tuple[Path, bool]:
    """The folder the demo works in, and whether it is a temporary one of its own."""
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="driftline-demo-")), True
    if folder.exists() and any(folder.iterdir()) and not force:
        raise DemoError(
            f"{folder} is not empty; the demo adds calls, keys, alerts and models to the data "
            "in it. Leave --dir out for a temporary folder, or pass --force to use it anyway"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, False


def settings(root: Path, sizes: Sizes, hook: WebhookReceiver) -> dict[str, str]:
    """`driftline serve`'s settings for the demo: small windows tested every second, rules that
    notify the webhook receiver at once, model folders under the demo's folder."""
    rules = root / "rules.yaml"
    rules.write_text(RULES.format(drift=DRIFT_ALERT, promoted=PROMOTED_ALERT, url=hook.url))
    return {
        "DRIFTLINE_DETECTORS__INTERVAL_SECONDS": "1",
        "DRIFTLINE_DETECTORS__EMBED_IDLE_SECONDS": "0.5",
        "DRIFTLINE_DETECTORS__WINDOW_CALLS": str(sizes.window),
        "DRIFTLINE_DETECTORS__PERMUTATIONS": "200",
        "DRIFTLINE_DETECTORS__ALPHA": str(ALPHA),
        "DRIFTLINE_DETECTORS__CONSECUTIVE_WINDOWS": "2",
        "DRIFTLINE_DETECTORS__PER_VERSION_REFERENCES": "false",
        # Every flagged call is queued: the slow calls alone would fill the daily budget.
        "DRIFTLINE_DETECTORS__REVIEW_DAILY_BUDGET": "100000",
        "DRIFTLINE_ALERTS__RULES_FILE": str(rules),
        "DRIFTLINE_ALERTS__EVALUATION_INTERVAL": "1",
        "DRIFTLINE_ALERTS__OUTBOX__TICK_SECONDS": "0.2",
        "DRIFTLINE_FINETUNE__MODELS_ROOT": str(root / "models"),
        "DRIFTLINE_FINETUNE__RUNS_DIR": str(root / "runs"),
        "DEMO_WEBHOOK_SECRET": hook.secret,
    }
