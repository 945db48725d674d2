"""A live A/B verdict (an `experiment:` alert) acted on in the model registry: recorded on the
candidate's version, and, opt in, the winner promoted or the loser rolled back."""

from __future__ import annotations

import logging
import time

from driftline.alerts.rules import RegistryAction
from driftline.alerts.state import Alert
from driftline.finetune import registry
from driftline.finetune.ledger import StoreLedger
from driftline.finetune.registry import VersionError
from driftline.store import Store

log = logging.getLogger(__name__)


def act_on_verdict(store: Store, action: RegistryAction, alert: Alert) -> str:
    """What was done for the alert's candidate, in a few words (also logged)."""
    project, name = alert.labels["project"], alert.labels["version"]
    ledger = StoreLedger(store, project)
    version = registry.find(ledger, name)
    if version is None:
        return _said(f"{project}: no model version {name!r} in the registry; verdict not recorded")
    verdict = str(alert.evidence["verdict"])
    version.verdict = {
        **version.verdict,
        "live": {
            "experiment": alert.labels["experiment"],
            "baseline": alert.labels["baseline"],
            "verdict": verdict,
            "calls": alert.value,
            "metrics": alert.evidence["metrics"],
            "decided_at": time.time(),
        },
    }
    ledger.save_version(version)
    done = f"{project}: live verdict {verdict!r} recorded on {name}"
    try:
        if verdict == "wins" and action.promote:
            registry.promote(ledger, name)
            done += "; promoted"
        elif verdict == "loses" and action.rollback:
            current = registry.current(ledger)
            if current is not None and current.version == name:
                _, back = registry.rollback(ledger)
                done += f"; rolled back to {back.version}"
    except VersionError as exc:
        done += f"; not acted on: {exc}"
    return _said(done)


def _said(text: str) -> str:
    log.info("%s", text)
    return text
