"""Dataset builders: reviewed feedback in chDB to TRL, OpenAI, Argilla and Label Studio rows."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.formats import FORMATS, build_rows
from driftline.finetune.dataset.snapshots import SnapshotError, export_snapshot, load_snapshot
from driftline.finetune.dataset.split import held_out_scores
from driftline.store import Store

PROJECT = "alpha"
FRACTION = 0.5
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def held_out(key: str, fraction: float = FRACTION, project: str = PROJECT) -> bool:
    """The documented split rule, written out again: blake2b(project NUL key) / 2**64."""
    digest = hashlib.blake2b(f"{project}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def key_in(test: bool, make: Any) -> str:
    """The first key `make(n)` that the split rule puts in the wanted split."""
    return next(make(n) for n in range(1000) if held_out(make(n)) == test)


TRAIN_CONV = key_in(False, lambda n: f"conv-train-{n}")
TEST_CONV = key_in(True, lambda n: f"conv-test-{n}")
TRACE_A = key_in(False, lambda n: f"{n:032x}")
TRACE_B = key_in(False, lambda n: f"{n + 1000:032x}")
TRACE_C = key_in(False, lambda n: f"{n + 2000:032x}")
SYSTEM = {"role": "system", "content": "You are terse."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# name: (trace_id, span_id, conversation_id, messages, input_text, output_text)
CALLS: dict[str, tuple[str, str, str, list[dict[str, str]], str, str]] = {
    "c1": ("1" * 32, "1" * 16, TRAIN_CONV, [SYSTEM, user("Capital of France?")], "", "Lyon."),
    "c2": (
        "2" * 32,
        "2" * 16,
        TRAIN_CONV,
        [SYSTEM, user("Capital of France?"), assistant("Paris."), user("And of Italy?")],
        "",
        "Rome.",
    ),
    "c3": (TRACE_A, "3" * 16, "", [user("Name a primary colour.")], "", "Red."),
    "c4": (TRACE_A, "4" * 16, "", [user("Name a primary colour.")], "", "Purple."),
    "c5": (TRACE_B, "5" * 16, "", [user("Name a colour.")], "", "Blue."),
    "c6": (TRACE_B, "6" * 16, "", [user("Name a colour.")], "", "Green."),
    "c7": ("7" * 32, "7" * 16, TEST_CONV, [user("Capital of Spain?")], "", "Barcelona."),
    "c8": (TRACE_C, "8" * 16, "", [], "Plain prompt?", "Plain answer."),
    "c9": (
        "9" * 32,
        "9" * 16,
        TEST_CONV,
        [user("Capital of Spain?"), assistant("Madrid."), user("And of Portugal?")],
        "",
        "Porto.",
    ),
}
MISSING = ("f" * 32, "e" * 16)
GOOD_ROME = {"label": "good", "start": 0, "end": 4}


def otel_messages(messages: list[dict[str, str]]) -> str:
    """Messages as the collector stores them: OTel GenAI parts."""
    if not messages:
        return ""
    return json.dumps(
        [
            {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
            for m in messages
        ]
    )


def insert_calls(store: Store, project: str = PROJECT) -> None:
    now = time.time_ns()  # recent: the table drops calls past its retention
    names = list(CALLS)
    times = pa.array([now + i for i in range(len(names))], pa.timestamp("ns", "UTC"))
    column = list(zip(*CALLS.values(), strict=True))
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": [project] * len(names),
                "trace_id": list(column[0]),
                "span_id": list(column[1]),
                "start_time": times,
                "end_time": times,
                "conversation_id": list(column[2]),
                "input_messages": [otel_messages(m) for m in column[3]],
                "input_text": list(column[4]),
                "output_text": list(column[5]),
                "response_model": ["tiny-1"] * len(names),
                "service": ["support"] * len(names),
            }
        ),
    )


def ref(call: str) -> dict[str, str]:
    trace_id, span_id = CALLS[call][:2]
    return {"trace_id": trace_id, "span_id": span_id}


def fb(
    fid: str,
    kind: str,
    call: str | tuple[str, str],
    name: str,
    *,
    number: float | None = None,
    text: str = "",
    details: dict[str, Any] | None = None,
    user_id: str = "ann",
) -> dict[str, Any]:
    trace_id, span_id = CALLS[call][:2] if isinstance(call, str) else call
    return {
        "id": fid,
        "trace_id": trace_id,
        "span_id": span_id,
        "name": name,
        "kind": kind,
        "value_number": number,
        "value_string": text,
        "user_id": user_id,
        "details": json.dumps(details) if details else "",
    }


FEEDBACK = [
    fb("f00", "correction", "c1", "correction", text="Paris."),
    fb("f01", "correction", "c1", "correction", text="Paris.", user_id="bob"),
    fb("f02", "pairwise", "c3", "preference", text="a", details={"a": ref("c3"), "b": ref("c4")}),
    fb("f03", "pairwise", "c5", "preference", text="tie", details={"a": ref("c5"), "b": ref("c6")}),
    fb("f04", "spans", "c2", "highlights", details={"spans": [GOOD_ROME]}),
    fb("f05", "numeric", "c2", "accuracy", number=5.0),
    fb("f06", "numeric", "c2", "helpfulness", number=4.0),
    fb("f07", "boolean", "c1", "thumbs", number=1.0, user_id="carl"),
    fb("f08", "correction", "c7", "correction", text="Madrid."),
    fb("f09", "numeric", "c8", "accuracy", number=3.0),
    fb("f10", "boolean", "c8", "thumbs", number=0.0, user_id="dan"),
    fb("f11", "categorical", "c3", "tone", text="formal"),
    fb("f12", "correction", MISSING, "correction", text="Anything."),
    fb("f13", "pairwise", "c4", "preference", text="b", details={"a": ref("c4"), "b": ref("c3")},
       user_id="bob"),
    fb("f14", "correction", "c8", "correction", text="Plain answer."),
    fb("f15", "correction", "c9", "correction", text="Lisbon."),
]  # fmt: skip


def insert_feedback(
    store: Store,
    rows: list[dict[str, Any]],
    created: list[datetime],
    ingested: list[datetime],
    source: str = "review",
) -> None:
    n = len(rows)
    store.insert_arrow(
        "feedback",
        pa.table(
            {
                "project_id": [PROJECT] * n,
                **{key: [r[key] for r in rows] for key in rows[0] if key != "value_number"},
                "value_number": pa.array([r["value_number"] for r in rows], pa.float64()),
                "source": [source] * n,
                "review_id": [f"review-{r['user_id']}" for r in rows],
                "created_at": pa.array(created, pa.timestamp("ms", "UTC")),
                "ingested_at": pa.array(ingested, pa.timestamp("ms", "UTC")),
            }
        ),
    )


def seed(store: Store) -> None:
    insert_calls(store)
    created = [BASE + timedelta(seconds=i) for i in range(len(FEEDBACK))]
    insert_feedback(store, FEEDBACK, created, [c + timedelta(seconds=1) for c in created])


def prompt(call: str) -> list[dict[str, str]]:
    messages = CALLS[call][3]
    return messages or [user(CALLS[call][4])]


def output(call: str) -> str:
    return CALLS[call][5]


def answer(text: str) -> list[dict[str, str]]:
    return [assistant(text)]


def filters(**overrides: Any) -> ExportFilters:
    return ExportFilters(**{"project": PROJECT, "test_fraction": FRACTION, **overrides})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- formats -----------------------------------------------------------------------------


def test_dpo_rows_are_corrections_and_choices_deduped_and_split(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "dpo", filters())
    assert train == [
        {"prompt": prompt("c1"), "chosen": answer("Paris."), "rejected": answer("Lyon.")},
        {"prompt": prompt("c3"), "chosen": answer("Red."), "rejected": answer("Purple.")},
    ]
    # c7 and c9 are two calls of one held-out conversation: both land in test
    assert test == [
        {"prompt": prompt("c7"), "chosen": answer("Madrid."), "rejected": answer("Barcelona.")},
        {"prompt": prompt("c9"), "chosen": answer("Lisbon."), "rejected": answer("Porto.")},
    ]
    assert counts == {
        "feedback": 16,
        "feedback_sources": {"review": 16},
        "rows": {"train": 2, "test": 2},
        "sources": {"correction": 3, "pairwise": 1},
        "skipped": {
            "call_not_found": 1,  # f12
            "duplicate": 2,  # f01 (same correction), f13 (same choice, sides swapped)
            "same_response": 1,  # f14: the correction is the original
            "spans_without_pair": 1,
            "tie": 1,
            "unused_boolean": 2,
            "unused_categorical": 1,
            "unused_numeric": 3,
        },
    }
    assert build_rows(store, "reward", filters()) == (train, test, counts)


def test_the_apps_feedback_trains_only_when_asked(store: Store) -> None:
    # The same judgements, sent by an app (an ingest key, any `user` it likes), not reviewers.
    insert_calls(store)
    created = [BASE + timedelta(seconds=i) for i in range(len(FEEDBACK))]
    insert_feedback(store, FEEDBACK, created, created, source="sdk")
    train, test, counts = build_rows(store, "dpo", filters())
    assert (train, test, counts["feedback"]) == ([], [], 0)
    assert counts["skipped"] == {"app_feedback": len(FEEDBACK)}
    train, test, counts = build_rows(store, "dpo", filters(app_feedback=True))
    assert counts["feedback_sources"] == {"sdk": len(FEEDBACK)}
    assert counts["rows"] == {"train": 2, "test": 2} and "app_feedback" not in counts["skipped"]
    # What a judge must agree with is people's scores, even in an export that reads the apps'.
    assert held_out_scores(store, filters(app_feedback=True, test_fraction=1.0)) == []
    insert_feedback(store, [{**r, "id": "r" + r["id"]} for r in FEEDBACK], created, created)
    people = held_out_scores(store, filters(test_fraction=1.0))
    assert sorted(response for _, response, _ in people) == ["Plain answer.", "Rome."]


def test_plain_rows_use_the_prompt_text(store: Store) -> None:
    seed(store)
    train, test, _ = build_rows(store, "dpo", filters(conversational=False))
    assert train == [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        {"prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Purple."},
    ]
    assert test == [
        {"prompt": "Capital of Spain?", "chosen": "Madrid.", "rejected": "Barcelona."},
        {
            "prompt": "Capital of Spain?\nAnd of Portugal?",
            "chosen": "Lisbon.",
            "rejected": "Porto.",
        },
    ]
    train, _, _ = build_rows(store, "kto", filters(conversational=False))
    assert train[-1] == {"prompt": "Plain prompt?", "completion": "Plain answer.", "label": False}


def test_openai_rows(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "openai-dpo", filters(conversational=False))
    assert train[0] == {
        "input": {"messages": prompt("c1")},
        "preferred_output": [assistant("Paris.")],
        "non_preferred_output": [assistant("Lyon.")],
    }
    assert [r["preferred_output"][0]["content"] for r in train + test] == [
        "Paris.",
        "Red.",
        "Madrid.",
        "Lisbon.",
    ]
    assert counts["rows"] == {"train": 2, "test": 2}


def test_kto_rows_label_thumbs_scores_and_corrections(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "kto", filters())

    def row(call: str, text: str, label: bool) -> dict[str, Any]:
        return {"prompt": prompt(call), "completion": answer(text), "label": label}

    assert train == [
        row("c1", "Paris.", True),  # c1's original, thumbs up (f07) and corrected: left out
        row("c2", "Rome.", True),  # mean score 4.5
        row("c8", "Plain answer.", False),  # thumbs down; its mean score 3 is between
    ]
    assert test == [
        row("c7", "Madrid.", True),
        row("c7", "Barcelona.", False),
        row("c9", "Lisbon.", True),
        row("c9", "Porto.", False),
    ]
    assert counts == {
        "feedback": 16,
        "feedback_sources": {"review": 16},
        "rows": {"train": 3, "test": 4},
        "sources": {"boolean": 1, "correction": 5, "numeric": 1},
        "skipped": {
            "between_thresholds": 1,
            "call_not_found": 1,
            "conflict": 1,
            "duplicate": 2,
            "same_response": 1,
            "unused_categorical": 1,
            "unused_pairwise": 3,
            "unused_spans": 1,
        },
    }


def test_kto_thresholds_are_filters(store: Store) -> None:
    seed(store)
    train, _, counts = build_rows(store, "kto", filters(kto_good=5.0, kto_bad=3.0))
    assert {"prompt": prompt("c2"), "completion": answer("Rome."), "label": True} not in train
    assert {"prompt": prompt("c8"), "completion": answer("Plain answer."), "label": False} in train
    assert counts["skipped"]["between_thresholds"] == 1  # c2 (4.5); c8 (3) is now bad


def reviewer(name: str) -> str:
    return str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "https://driftline.dev/reviewers"), name))


def answered(value: Any, who: str = "ann") -> dict[str, Any]:
    return {"value": value, "user_id": reviewer(who), "status": "submitted"}


def metadata(call: str) -> dict[str, str]:
    trace_id, span_id, conversation = CALLS[call][:3]
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "conversation_id": conversation,
        "model": "tiny-1",
        "service": "support",
    }


def test_argilla_records_hold_each_reviewers_answers(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "argilla", filters())

    def record(call: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "-".join(CALLS[call][:2]),
            "fields": {"prompt": prompt(call), "response": output(call)},
            "metadata": metadata(call),
            "suggestions": {},
            "responses": responses,
            "vectors": {},
        }

    assert train == [
        record(
            "c1",
            {
                "correction": [answered("Paris."), answered("Paris.", "bob")],
                "thumbs": [answered("true", "carl")],
            },
        ),
        record(
            "c2",
            {
                "highlights": [answered([{"label": "good", "start": 0, "end": 4}])],
                "accuracy": [answered(5)],
                "helpfulness": [answered(4)],
            },
        ),
        record(
            "c8",
            {
                "accuracy": [answered(3)],
                "thumbs": [answered("false", "dan")],
                "correction": [answered("Plain answer.")],
            },
        ),
        record("c3", {"tone": [answered("formal")]}),
    ]
    assert test == [
        record("c7", {"correction": [answered("Madrid.")]}),
        record("c9", {"correction": [answered("Lisbon.")]}),
    ]
    assert counts["skipped"] == {"call_not_found": 1, "pairwise_not_in_argilla": 3}
    assert counts["sources"] == {
        "boolean": 2,
        "categorical": 1,
        "correction": 5,
        "numeric": 3,
        "spans": 1,
    }


def test_argilla_sdk_reads_the_records(store: Store) -> None:
    import argilla as rg

    seed(store)
    train, test, _ = build_rows(store, "argilla", filters())
    for row in train + test:
        record = rg.Record.from_dict(row)
        assert all(r.status == "submitted" for r in record.responses)
        assert {r.question_name for r in record.responses} == set(row["responses"])
        back = record.to_dict()
        assert {k: back[k] for k in ("id", "fields", "metadata")} == {
            k: row[k] for k in ("id", "fields", "metadata")
        }
        assert back["responses"] == {
            q: [{"value": a["value"], "user_id": a["user_id"]} for a in answers]
            for q, answers in row["responses"].items()
        }


def test_label_studio_tasks_hold_one_annotation_per_reviewer(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "label-studio", filters())
    region_ids = [r.pop("id") for t in train + test for a in t["annotations"] for r in a["result"]]
    assert len(set(region_ids)) == len(region_ids)
    assert all(len(i) == 10 for i in region_ids)

    def result(name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"from_name": name, "to_name": "response", "type": kind, "value": value}

    def data(call: str, plain: str) -> dict[str, Any]:
        messages = [{"author": m["role"], "text": m["content"]} for m in prompt(call)]
        return {"prompt": plain, "response": output(call), "messages": messages, **metadata(call)}

    assert [t["data"]["span_id"] for t in train] == [CALLS[c][1] for c in ("c1", "c2", "c8", "c3")]
    assert train[0] == {
        "data": data("c1", "Capital of France?"),
        "annotations": [
            {"result": [result("correction", "textarea", {"text": ["Paris."]})]},
            {"result": [result("correction", "textarea", {"text": ["Paris."]})]},
            {"result": [result("thumbs", "choices", {"choices": ["true"]})]},
        ],
    }
    assert train[1] == {
        "data": data("c2", "Capital of France?\nAnd of Italy?"),
        "annotations": [
            {
                "result": [
                    result(
                        "highlights",
                        "labels",
                        {"start": 0, "end": 4, "text": "Rome", "labels": ["good"]},
                    ),
                    result("accuracy", "rating", {"rating": 5}),
                    result("helpfulness", "rating", {"rating": 4}),
                ]
            }
        ],
    }
    assert train[3]["annotations"] == [
        {"result": [result("tone", "choices", {"choices": ["formal"]})]}
    ]
    assert [t["data"]["span_id"] for t in test] == [CALLS["c7"][1], CALLS["c9"][1]]
    assert counts["skipped"] == {"call_not_found": 1, "pairwise_not_in_label_studio": 3}


def test_a_reviewers_later_answer_replaces_the_earlier(store: Store) -> None:
    insert_calls(store)
    rows = [
        fb("g1", "numeric", "c2", "accuracy", number=2.0),
        fb("g2", "numeric", "c2", "accuracy", number=4.0),
    ]
    created = [BASE, BASE + timedelta(seconds=1)]
    insert_feedback(store, rows, created, created)
    train, _, counts = build_rows(store, "argilla", filters())
    assert train[0]["responses"] == {"accuracy": [answered(4)]}
    assert counts["skipped"] == {"replaced_by_later": 1}


def test_feedback_on_a_trace_judges_its_last_call_and_a_span_alone_is_found(store: Store) -> None:
    insert_calls(store)
    rows = [
        fb("h1", "boolean", (TRACE_A, ""), "thumbs", number=1.0),  # c3 then c4: c4
        fb("h2", "boolean", ("", CALLS["c1"][1]), "thumbs", number=0.0),
    ]
    created = [BASE, BASE + timedelta(seconds=1)]
    insert_feedback(store, rows, created, created)
    train, _, counts = build_rows(store, "kto", filters(test_fraction=0.0))
    assert train == [
        {"prompt": prompt("c4"), "completion": answer("Purple."), "label": True},
        {"prompt": prompt("c1"), "completion": answer("Lyon."), "label": False},
    ]
    assert counts["skipped"] == {}


# --- filters, files and snapshots ---------------------------------------------------------


def test_since_keeps_later_feedback_only(store: Store) -> None:
    seed(store)
    train, test, counts = build_rows(store, "dpo", filters(since=BASE + timedelta(seconds=8)))
    assert counts["feedback"] == 8  # f08 .. f15
    assert train == [  # f13 is no longer a repeat of f02
        {"prompt": prompt("c4"), "chosen": answer("Red."), "rejected": answer("Purple.")}
    ]
    assert [r["chosen"] for r in test] == [answer("Madrid."), answer("Lisbon.")]


def test_everything_in_test_or_in_train(store: Store) -> None:
    seed(store)
    train, test, _ = build_rows(store, "dpo", filters(test_fraction=1.0))
    assert (len(train), len(test)) == (0, 4)
    train, test, _ = build_rows(store, "dpo", filters(test_fraction=0.0))
    assert (len(train), len(test)) == (4, 0)


def test_bad_arguments_are_named(store: Store) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset format 'sft'.*dpo, kto, reward"):
        build_rows(store, "sft", filters())
    with pytest.raises(ValueError, match="test_fraction"):
        build_rows(store, "dpo", filters(test_fraction=1.5))
    with pytest.raises(ValueError, match="kto_bad"):
        build_rows(store, "kto", filters(kto_good=2.0, kto_bad=3.0))


def test_export_writes_train_and_test_and_records_a_snapshot(store: Store, tmp_path: Path) -> None:
    seed(store)
    out = tmp_path / "one" / "dpo.jsonl"
    snapshot = export_snapshot(store, "dpo", filters(), out)
    test_file = tmp_path / "one" / "dpo.test.jsonl"
    train, test, counts = build_rows(store, "dpo", filters())
    assert read_jsonl(out) == train
    assert read_jsonl(test_file) == test
    assert snapshot.sha256 == hashlib.sha256(out.read_bytes() + test_file.read_bytes()).hexdigest()
    assert (snapshot.project, snapshot.format, snapshot.rows, snapshot.counts) == (
        PROJECT,
        "dpo",
        4,
        counts,
    )
    assert snapshot.filters["until"] is not None  # the cutoff is fixed at export
    again = export_snapshot(store, "dpo", filters(), tmp_path / "two" / "dpo.jsonl")
    assert again.sha256 == snapshot.sha256 and again.id != snapshot.id
    assert (tmp_path / "two" / "dpo.jsonl").read_bytes() == out.read_bytes()
    stored = store.query(
        "SELECT id, format, rows, sha256, counts, filters FROM dataset_snapshots FINAL "
        "WHERE project_id = {p:String} ORDER BY created_at, id",
        {"p": PROJECT},
    )
    assert {r["id"] for r in stored} == {snapshot.id, again.id}
    mine = next(r for r in stored if r["id"] == snapshot.id)
    assert (mine["format"], mine["rows"], mine["sha256"]) == ("dpo", 4, snapshot.sha256)
    assert json.loads(mine["counts"]) == counts
    assert json.loads(mine["filters"]) == snapshot.filters


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_through_its_snapshot(
    store: Store, tmp_path: Path, fmt: str
) -> None:
    seed(store)
    out = tmp_path / f"{fmt}.data"
    snapshot = export_snapshot(store, fmt, filters(), out)
    loaded, train, test = load_snapshot(store, snapshot.id, PROJECT)
    assert loaded == snapshot
    if fmt == "label-studio":  # one JSON array per file
        assert json.loads(out.read_text()) == train
        assert json.loads((tmp_path / f"{fmt}.test.data").read_text()) == test
    else:
        assert read_jsonl(out) == train
        assert read_jsonl(tmp_path / f"{fmt}.test.data") == test
    assert snapshot.rows == len(train) + len(test) > 0


def test_load_snapshot_detects_feedback_slipped_in_before_the_cutoff(
    store: Store, tmp_path: Path
) -> None:
    seed(store)
    snapshot = export_snapshot(store, "dpo", filters(), tmp_path / "dpo.jsonl")
    cutoff = datetime.fromisoformat(snapshot.filters["until"])
    late = fb("late", "correction", "c3", "correction", text="Yellow.")
    later = BASE + timedelta(minutes=30)
    insert_feedback(store, [late], [later], [cutoff + timedelta(seconds=5)])
    assert load_snapshot(store, snapshot.id, PROJECT)[0] == snapshot  # after the cutoff: ignored
    backdated = fb("backdated", "correction", "c3", "correction", text="Blue.")
    insert_feedback(store, [backdated], [later], [cutoff - timedelta(seconds=5)])
    with pytest.raises(SnapshotError, match=r"no longer rebuilds.*4 rows.*5 rows"):
        load_snapshot(store, snapshot.id, PROJECT)


def test_unknown_snapshots_are_errors(store: Store, tmp_path: Path) -> None:
    seed(store)
    snapshot = export_snapshot(store, "kto", filters(), tmp_path / "kto.jsonl")
    with pytest.raises(SnapshotError, match="no dataset snapshot 'nope' in project 'alpha'"):
        load_snapshot(store, "nope", PROJECT)
    with pytest.raises(ValueError, match="no dataset snapshot"):
        load_snapshot(store, snapshot.id, "beta")


@pytest.mark.parametrize("fmt", ["dpo", "label-studio"])
def test_an_empty_export_still_writes_files_and_a_snapshot(
    store: Store, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "empty.json"
    snapshot = export_snapshot(store, fmt, filters(), out)
    empty = b"[]\n" if fmt == "label-studio" else b""
    assert out.read_bytes() == empty
    assert (tmp_path / "empty.test.json").read_bytes() == empty
    assert snapshot.rows == 0
    assert snapshot.counts == {
        "feedback": 0,
        "feedback_sources": {},
        "rows": {"train": 0, "test": 0},
        "sources": {},
        "skipped": {},
    }
    assert load_snapshot(store, snapshot.id, PROJECT)[1:] == ([], [])


# --- TRL accepts the rows -----------------------------------------------------------------


def trl_dataset(path: Path, cache: Path) -> Any:
    from datasets import Dataset

    return Dataset.from_json(str(path), cache_dir=str(cache))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("WANDB_DISABLED", "true")


@pytest.mark.parametrize("conversational", [True, False], ids=["conversational", "plain"])
def test_trl_dpo_trainer_takes_the_dpo_rows(
    store: Store, tmp_path: Path, offline: None, conversational: bool
) -> None:
    from trl import DPOConfig, DPOTrainer

    from tests.finetune.tiny_model import tiny_model, tokenizer_for

    seed(store)
    out = tmp_path / "dpo.jsonl"
    export_snapshot(store, "dpo", filters(test_fraction=0.0, conversational=conversational), out)
    dataset = trl_dataset(out, tmp_path / "cache")
    assert dataset.num_rows == 4
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected"}
    tokenizer = tokenizer_for(read_jsonl(out))
    model = tiny_model(len(tokenizer))
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),  # the reference is loaded from the model's path otherwise
        args=DPOConfig(**one_step(tmp_path)),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    tokenized = trainer.train_dataset[0]
    assert tokenized["prompt_ids"] and tokenized["chosen_ids"] and tokenized["rejected_ids"]
    assert tokenizer.decode(tokenized["chosen_ids"]).startswith("Paris")
    result = trainer.train()
    assert result.global_step == 1


def test_trl_kto_trainer_takes_the_kto_rows(store: Store, tmp_path: Path, offline: None) -> None:
    from trl import KTOConfig, KTOTrainer

    from tests.finetune.tiny_model import tiny_model, tokenizer_for

    seed(store)
    out = tmp_path / "kto.jsonl"
    export_snapshot(store, "kto", filters(test_fraction=0.0), out)
    dataset = trl_dataset(out, tmp_path / "cache")
    assert dataset.num_rows == 7
    assert dataset.features["label"].dtype == "bool"
    tokenizer = tokenizer_for(read_jsonl(out))
    model = tiny_model(len(tokenizer))
    trainer = KTOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),  # the reference is loaded from the model's path otherwise
        args=KTOConfig(**one_step(tmp_path)),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert trainer.train().global_step == 1


def one_step(tmp_path: Path) -> dict[str, Any]:
    """Trainer arguments for one CPU step, saving nothing."""
    return {
        "output_dir": str(tmp_path / "run"), "use_cpu": True, "max_steps": 1,
        "per_device_train_batch_size": 2, "report_to": [], "save_strategy": "no",
        "max_length": 128, "dataloader_num_workers": 0,
    }  # fmt: skip
