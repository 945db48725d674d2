"""Feedback beyond a value: corrections, pairwise choices and highlighted spans, checked
against the calls they judge."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from driftline.store import Store
from tests.api.test_feedback_api import listed, post
from tests.conftest import Collector

TRACE = "0af7651916cd43dd8448eb211c80319c"
A, B = "b7ad6b7169203331", "c7ad6b7169203332"
ANSWER_A = "Paris is the capital of France."
ANSWER_B = "The capital of France is Lyon."


def store_calls(store: Store, project: str = "alpha") -> None:
    now = time.time_ns()  # recent: older calls fall to the table's retention
    times = pa.array([now, now + 1], pa.timestamp("ns", "UTC"))
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": [project, project],
                "trace_id": [TRACE, TRACE],
                "span_id": [A, B],
                "start_time": times,
                "end_time": times,
                "input_text": ["What is the capital of France?"] * 2,
                "output_text": [ANSWER_A, ANSWER_B],
            }
        ),
    )


def test_each_shape_is_stored_and_listed_as_sent(collector: Collector) -> None:
    store_calls(collector.runtime.store)
    records: list[dict[str, Any]] = [
        {"span_id": B, "trace_id": TRACE, "name": "correction", "correction": ANSWER_A,
         "review_id": "r1", "user": "ann"},
        {"span_id": A, "trace_id": TRACE, "name": "preference", "choice": "a",
         "a": {"trace_id": TRACE, "span_id": A}, "b": {"trace_id": TRACE, "span_id": B}},
        {"span_id": B, "trace_id": TRACE, "name": "highlights",
         "spans": [{"label": "bad", "start": 25, "end": 29, "note": "not the capital"}]},
        {"span_id": A, "trace_id": TRACE, "name": "accuracy", "value": 5},
    ]  # fmt: skip
    answer = post(collector, records)
    assert answer.status_code == 200, answer.text
    got = {f["name"]: f for f in listed(collector)}
    assert got["correction"]["kind"] == "correction"
    assert got["correction"]["correction"] == ANSWER_A
    assert (got["correction"]["review_id"], got["correction"]["user"]) == ("r1", "ann")
    assert got["preference"]["kind"] == "pairwise"
    assert got["preference"]["choice"] == "a"
    assert got["preference"]["b"] == {"trace_id": TRACE, "span_id": B}
    assert got["highlights"]["spans"] == [
        {"label": "bad", "start": 25, "end": 29, "note": "not the capital"}
    ]
    assert ANSWER_B[25:29] == "Lyon"
    assert (got["accuracy"]["kind"], got["accuracy"]["value"]) == ("numeric", 5.0)


def test_spans_and_choices_must_point_at_real_responses(collector: Collector) -> None:
    store_calls(collector.runtime.store)
    past_end = {"span_id": A, "name": "hl", "spans": [{"label": "bad", "start": 0, "end": 99}]}
    answer = post(collector, past_end)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        f"spans.0: end 99 is past the end of the response ({len(ANSWER_A)} characters)"
    )
    missing = "d" * 16
    unknown = {"span_id": missing, "name": "hl", "spans": [{"label": "bad", "start": 0, "end": 1}]}
    assert "no LLM call" in post(collector, [unknown]).json()["error"]
    choice = {
        "span_id": A, "name": "pref", "choice": "b",
        "a": {"trace_id": TRACE, "span_id": A}, "b": {"trace_id": TRACE, "span_id": missing},
    }  # fmt: skip
    answer = post(collector, [choice])
    assert answer.status_code == 400
    assert answer.json()["error"] == f"[0].b: no LLM call {TRACE}/{missing}"
    assert listed(collector) == []


def test_another_projects_calls_cannot_be_marked(collector_factory: Any) -> None:
    beta = collector_factory("beta")
    store_calls(beta.runtime.store, project="alpha")  # the call belongs to alpha
    mark = {"span_id": A, "name": "hl", "spans": [{"label": "good", "start": 0, "end": 5}]}
    answer = post(beta, mark)
    assert answer.status_code == 400 and "no LLM call" in answer.json()["error"]
