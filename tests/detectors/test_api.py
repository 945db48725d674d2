"""The drift API over a real detector pass: references, /api/drift, findings, review queue."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.config import DetectorSettings
from driftline.detectors.embedder import Embedder
from driftline.detectors.runner import Runner
from tests.conftest import Collector
from tests.detectors.conftest import MIX, Corpus, insert_calls, split


def call(collector: Collector, method: str, path: str, key: str, **kwargs: Any) -> Any:
    return collector.client.request(
        method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
    )


def test_references_drift_findings_and_queue(
    collector_factory: Any, corpus: Corpus, embedder: Embedder
) -> None:
    alpha: Collector = collector_factory("alpha")
    beta: Collector = collector_factory("beta")
    store = alpha.runtime.store
    insert_calls(store, corpus, embedder, split(corpus, MIX, 60, 0), start=0)

    bad = [
        ({"name": "has space"}, "name"),
        ({"name": "b", "limit": 10}, "limit"),
        ({"name": "b", "colour": "red"}, "colour"),
        ({"name": "b", "service": "nobody"}, "only 0 calls match"),
    ]
    for body, problem in bad:
        response = call(alpha, "POST", "/api/references", alpha.admin_key, json=body)
        assert response.status_code == 400 and problem in response.json()["error"], body
    forbidden = call(alpha, "POST", "/api/references", alpha.read_key, json={"name": "b"})
    assert forbidden.status_code == 403
    made = call(
        alpha, "POST", "/api/references", alpha.admin_key, json={"name": "b", "service": "bot"}
    )
    assert made.status_code == 201, made.text
    assert (made.json()["version"], made.json()["calls"]) == (1, 300)
    listed = call(alpha, "GET", "/api/references", alpha.read_key).json()["items"]
    assert [(r["name"], r["scope"]) for r in listed] == [("b", {"service": "bot"})]
    assert call(beta, "GET", "/api/references", beta.read_key).json()["items"] == []

    rng = np.random.default_rng(3)
    insert_calls(store, corpus, embedder, rng.permutation(split(corpus, MIX, 30, 60)), 1000)
    shifted = split(corpus, ("games", "fonts", "golang"), 50, 0)
    answers = shifted.copy()
    answers[::15] = split(corpus, ("doc",), 10, 100)
    insert_calls(store, corpus, embedder, shifted, 2000, responses=answers)
    settings = DetectorSettings(window_calls=150, permutations=100, consecutive_windows=1)
    Runner(store, settings, embedder).run_once()

    drift = call(alpha, "GET", "/api/drift", alpha.read_key, params={"reference": "b"}).json()
    windows = drift["items"]
    assert [w["drifting"] for w in windows] == [False, True]  # oldest first
    assert windows[1]["alerting"] is True
    assert {t["detector"] for t in windows[1]["tests"]} == set(settings.tests)
    assert all(t["p_value"] < 0.05 for t in windows[1]["tests"])
    assert call(beta, "GET", "/api/drift", beta.read_key).json()["items"] == []

    findings = call(
        alpha, "GET", "/api/findings", alpha.read_key, params={"detector": "topics"}
    ).json()["items"]
    assert len(findings) == 2
    # Topics is a diagnostic (the window decides on MMD): reported with its clusters, never
    # deciding; the drifting window's MMD finding is the rejected one.
    topics = findings[0]
    assert topics["rejected"] is False and topics["p_value"] < 0.05
    assert topics["details"]["clusters"]
    mmd = call(alpha, "GET", "/api/findings", alpha.read_key, params={"detector": "mmd"}).json()[
        "items"
    ]
    assert [f["rejected"] for f in mmd] == [True, False]  # newest first

    queue = call(alpha, "GET", "/api/review-queue", alpha.read_key).json()["items"]
    flagged = [q for q in queue if q["source"] == "flag"]
    assert flagged and all(q["reasons"] for q in flagged)
    assert flagged[0]["priority"] >= flagged[-1]["priority"]
    assert all(q["output_text"] for q in queue)
    off_topic = call(
        alpha, "GET", "/api/review-queue", alpha.read_key, params={"reason": "low_relevance"}
    ).json()["items"]
    assert off_topic and all("low_relevance" in q["reasons"] for q in off_topic)
    assert call(beta, "GET", "/api/review-queue", beta.read_key).json()["items"] == []
