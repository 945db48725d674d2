"""Expensive requests (full-text search of calls, dataset exports and rebuilds, new references)
have their own, smaller budget per project, beside every key's own rate limit: a project cannot
make them cheap by minting keys, nor spend another project's budget."""

from __future__ import annotations

from typing import Any

from driftline.store import Store, keys
from tests.conftest import Collector


def search(collector: Collector, key: str, q: str | None = "refund") -> Any:
    params = {"q": q} if q else {}
    return collector.client.get(
        "/api/calls", params=params, headers={"Authorization": f"Bearer {key}"}
    )


def test_searches_and_exports_share_a_small_budget_per_project(
    collector_factory: Any, store: Store
) -> None:
    alpha = collector_factory(heavy_rate_limit_per_second=0.01, heavy_rate_limit_burst=2)
    second_key = keys.create_key(store, "alpha", "read")[1]
    beta = keys.create_key(store, "beta", "read")[1]
    assert search(alpha, alpha.read_key).status_code == 200
    export = alpha.client.post("/api/datasets", json={"format": "dpo"},
                               headers={"Authorization": f"Bearer {alpha.admin_key}"})  # fmt: skip
    assert export.status_code == 201
    refused = search(alpha, second_key)  # another key of the same project: the same budget
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "heavy_rate_limit_per_second" in refused.json()["error"]
    assert search(alpha, alpha.read_key, q=None).status_code == 200  # a range read is cheap
    assert search(alpha, beta).status_code == 200  # beta's budget is its own


def test_list_limits_are_bounded(collector: Collector) -> None:
    for path in ("/api/alerts", "/api/drift", "/api/calls", "/api/feedback"):
        too_many = collector.client.get(
            path, params={"limit": 5000},
            headers={"Authorization": f"Bearer {collector.read_key}"},
        )  # fmt: skip
        assert too_many.status_code == 400, path
        assert "limit" in too_many.json()["error"], path
