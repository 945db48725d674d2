"""Prometheus series per project: a project's made-up model names (span attributes anyone with
its ingest key chooses) fill only its own budget, never another project's."""

from __future__ import annotations

from typing import Any

from driftline.store import Store, keys
from tests.conftest import Collector, wait_for
from tests.factory import PROTOBUF, auth, genai_attrs, request, span


def send(collector: Collector, key: str, models: list[str]) -> None:
    body = request([span(genai_attrs(model=m)) for m in models]).SerializeToString()
    sent = collector.client.post("/v1/traces", content=body, headers={**PROTOBUF, **auth(key)})
    assert sent.status_code == 200, sent.text


def calls_by_model(collector: Collector, project: str) -> dict[str, float]:
    """driftline_llm_calls_total of the project, by model."""
    found: dict[str, float] = {}
    for line in collector.client.get("/metrics").text.splitlines():
        if line.startswith("driftline_llm_calls_total{") and f'project="{project}"' in line:
            model = line.split('model="')[1].split('"')[0]
            found[model] = found.get(model, 0) + float(line.rsplit(" ", 1)[1])
    return found


def test_one_projects_flood_of_models_leaves_others_series_alone(
    collector_factory: Any, store: Store
) -> None:
    alpha = collector_factory(max_label_series=10)
    beta_key = keys.create_key(store, "beta", "ingest")[1]
    flood = [f"model-{i}" for i in range(40)]
    send(alpha, alpha.ingest_key, flood)
    alpha.wait_stored(count=40)
    send(alpha, beta_key, ["beta-model"])
    alpha.wait_stored(count=41)

    wait_for(lambda: calls_by_model(alpha, "beta"), "beta's call never showed in /metrics", 10)
    assert calls_by_model(alpha, "beta") == {"beta-model": 1}
    seen = calls_by_model(alpha, "alpha")
    assert len(seen) == 11 and seen["_other"] == 30  # ten of its own, the rest in _other
    assert sum(seen.values()) == 40  # counted, not dropped
