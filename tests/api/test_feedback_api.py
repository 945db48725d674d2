"""POST /api/feedback and GET /api/feedback: validation, idempotency, project isolation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from driftline.store import Store, keys
from tests.conftest import Collector

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def post(collector: Collector, body: Any, key: str | None = None) -> Any:
    return collector.client.post(
        "/api/feedback",
        json=body,
        headers={"Authorization": f"Bearer {key or collector.ingest_key}"},
    )


def listed(collector: Collector, key: str | None = None, **params: str) -> list[dict[str, Any]]:
    response = collector.client.get(
        "/api/feedback",
        params=params,
        headers={"Authorization": f"Bearer {key or collector.read_key}"},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_one_object_or_a_list_is_stored_and_listed(collector: Collector) -> None:
    one = post(collector, {"trace_id": TRACE, "name": "thumbs", "value": False, "user": "ann"})
    assert one.status_code == 200, one.text
    assert one.json()["accepted"] == 1
    many = post(
        collector,
        [
            {"trace_id": TRACE, "name": "accuracy", "value": 2.5, "comment": "half right"},
            {"span_id": "00f067aa0ba902b7", "name": "label", "value": "refusal"},
        ],
    )
    assert many.json() == {"accepted": 2, "duplicates": 0, "ids": many.json()["ids"]}
    items = listed(collector, trace_id=TRACE)
    assert {(i["name"], i["value"]) for i in items} == {("thumbs", False), ("accuracy", 2.5)}
    thumbs = next(i for i in items if i["name"] == "thumbs")
    assert thumbs["user"] == "ann" and thumbs["source"] == "api" and thumbs["kind"] == "boolean"
    assert len(listed(collector)) == 3
    assert [i["name"] for i in listed(collector, name="label")] == ["label"]


def test_a_retried_record_is_stored_once(collector: Collector) -> None:
    record = {"id": str(uuid.uuid4()), "trace_id": TRACE, "name": "thumbs", "value": 1}
    assert post(collector, record).json()["duplicates"] == 0
    assert post(collector, [record, record]).json()["duplicates"] == 2
    assert len(listed(collector)) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"trace_id": TRACE, "name": "thumbs"}, "give exactly one of value, correction, choice"),
        (
            {"trace_id": TRACE, "name": "x", "value": 1, "correction": "better"},
            "give exactly one of value, correction, choice or spans",
        ),
        ({"trace_id": TRACE, "name": "pref", "choice": "a"}, "a choice needs both responses"),
        ({"trace_id": TRACE, "name": "pref", "choice": "c"}, "choice: Input should be 'a'"),
        (
            {"trace_id": TRACE, "name": "hl", "spans": [{"label": "bad", "start": 0, "end": 4}]},
            "spans need the span_id",
        ),
        (
            {"span_id": SPAN, "name": "hl", "spans": [{"label": "bad", "start": 5, "end": 4}]},
            "spans.0: Value error, end (4) must be after start (5)",
        ),
        ({"trace_id": TRACE, "name": "thumbs", "value": [1]}, "value"),
        ({"trace_id": TRACE, "name": "thumbs", "value": {"a": 1}}, "value"),
        ({"name": "thumbs", "value": 1}, "give trace_id or span_id"),
        ({"trace_id": "xyz", "name": "thumbs", "value": 1}, "trace_id: Value error, must be 32"),
        ({"trace_id": "0" * 32, "name": "thumbs", "value": 1}, "not all zero"),
        ({"span_id": "abc", "name": "thumbs", "value": 1}, "span_id"),
        ({"trace_id": TRACE, "name": "", "value": 1}, "name"),
        ({"trace_id": TRACE, "name": "x", "value": 1, "colour": "red"}, "colour: Extra inputs"),
        ([{"trace_id": TRACE, "name": "ok", "value": 1}, {"name": "x"}], "[1]"),
        ([], "no feedback in the body"),
    ],
)
def test_bad_feedback_gets_400_naming_the_problem(
    collector: Collector, body: Any, problem: str
) -> None:
    response = post(collector, body)
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert listed(collector) == []  # nothing of a refused request is stored


def test_not_json_and_too_many(collector: Collector) -> None:
    response = collector.client.post(
        "/api/feedback",
        content=b"{nope",
        headers={"Authorization": f"Bearer {collector.ingest_key}"},
    )
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    record = {"trace_id": TRACE, "name": "t", "value": 1}
    response = post(collector, [record] * 1001)
    assert response.status_code == 400 and "at most 1000" in response.json()["error"]


def test_keys_and_projects(collector_factory: Any) -> None:
    alpha = collector_factory("alpha")
    beta = collector_factory("beta")
    assert post(alpha, {"trace_id": TRACE, "name": "t", "value": 1}).status_code == 200
    assert (
        post(alpha, {"trace_id": TRACE, "name": "t", "value": 1}, alpha.read_key).status_code == 403
    )
    assert listed(beta) == []  # beta's read key sees none of alpha's feedback
    assert len(listed(alpha)) == 1
    no_key = alpha.client.post("/api/feedback", json={})
    assert no_key.status_code == 401


def test_only_reviewers_judgements_train_unless_the_apps_are_asked_for(
    collector: Collector, store: Store
) -> None:
    # Whoever holds an ingest key sends 1,000 corrections in someone's name.
    forged = [{"trace_id": TRACE, "name": "correction", "correction": "Buy now!", "user": "alice",
               "created_at": "2020-01-01T00:00:00Z"}] * 1000  # fmt: skip
    assert post(collector, forged).status_code == 200
    alice = keys.create_key(store, "alpha", "review", "alice")[1]
    judged = post(collector, {"trace_id": TRACE, "name": "correction", "correction": "Paris."},
                  alice)  # fmt: skip
    assert judged.status_code == 200, judged.text
    assert [(i["source"], i["user"]) for i in listed(collector, source="review")] == [
        ("review", "alice")
    ]

    def export(**options: Any) -> dict[str, Any]:
        made = collector.client.post(
            "/api/datasets", json={"format": "kto", **options},
            headers={"Authorization": f"Bearer {collector.admin_key}"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        return dict(made.json()["counts"])

    counts = export()
    assert (counts["feedback"], counts["feedback_sources"]) == (1, {"review": 1})
    assert counts["skipped"]["app_feedback"] == 1000
    counts = export(app_feedback=True)
    assert counts["feedback_sources"] == {"api": 1000, "review": 1}


def test_a_review_key_speaks_only_for_its_reviewer(collector: Collector, store: Store) -> None:
    alice = keys.create_key(store, "alpha", "review", "alice")[1]
    as_bob = post(collector, [{"trace_id": TRACE, "name": "t", "value": 1},
                              {"trace_id": TRACE, "name": "t", "value": 2, "user": "bob"}],
                  alice)  # fmt: skip
    assert as_bob.status_code == 400
    error = as_bob.json()["error"]
    assert "[1].user: a review key's feedback is stored under its reviewer 'alice'" in error
    assert listed(collector) == []  # nothing of a refused request is kept
