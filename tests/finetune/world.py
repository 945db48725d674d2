"""A learnable synthetic preference in a real store: calls whose answers reviewers corrected in
one consistent wording, a tiny causal LM saved to a folder, and the snapshot they make."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from driftline.finetune.dataset.filters import ExportFilters
from driftline.finetune.dataset.snapshots import Snapshot, record_snapshot
from driftline.store import Store
from tests.finetune.tiny_model import tiny_model, tokenizer_for

TOPICS = [
    "apples", "rivers", "engines", "violins", "glaciers", "tigers", "lamps", "bridges",
    "comets", "tulips", "robots", "castles", "kettles", "oceans", "pianos", "deserts",
    "rockets", "forests", "mirrors", "islands", "ladders", "planets", "candles", "wolves",
    "harbors", "meadows", "tunnels", "lanterns", "volcanoes", "orchards", "canyons", "gardens",
    "compasses", "beacons", "rafts", "quarries", "saddles", "anchors", "mills", "vineyards",
]  # fmt: skip
# Reviewers always replace the model's hedge with a plain, sourced answer.
GOOD = "{topic} are well documented and the facts are clear"
BAD = "maybe {topic} are strange and nobody really knows"


def conversation(i: int) -> str:
    return f"conv-{i:03d}"


def insert_world(
    store: Store, project: str, flipped: bool = False, topics: list[str] = TOPICS
) -> None:
    """One call per topic answered badly and corrected well (or, flipped, the other way)."""
    corrected = [(BAD if flipped else GOOD).format(topic=t) for t in topics]
    insert_feedback(store, project, insert_calls(store, project, flipped, topics), "correction",
                    texts=corrected)  # fmt: skip


def insert_thumbs(store: Store, project: str, up: int, down: int) -> None:
    """Calls rated only by thumbs: `up` good answers liked, `down` bad ones disliked."""
    topics = TOPICS[: up + down]
    calls = insert_calls(store, project, False, topics)
    insert_feedback(store, project, calls, "boolean", numbers=[1.0] * up + [0.0] * down)


def insert_calls(
    store: Store, project: str, flipped: bool, topics: list[str]
) -> tuple[list[str], list[str]]:
    """One call per topic; its (trace ids, span ids)."""
    now = time.time_ns()
    n = len(topics)
    trace_ids = [uuid.uuid4().hex for _ in topics]
    span_ids = [uuid.uuid4().hex[:16] for _ in topics]
    times = pa.array([now + i for i in range(n)], pa.timestamp("ns", "UTC"))
    asked = [f"tell me about {t}" for t in topics]
    said = [(GOOD if flipped else BAD).format(topic=t) for t in topics]
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": [project] * n,
                "trace_id": trace_ids,
                "span_id": span_ids,
                "start_time": times,
                "end_time": times,
                "conversation_id": [conversation(i) for i in range(n)],
                "input_messages": [
                    json.dumps([{"role": "user", "parts": [{"type": "text", "content": q}]}])
                    for q in asked
                ],
                "input_text": asked,
                "output_text": said,
                "response_model": ["tiny-1"] * n,
                "service": ["support"] * n,
            }
        ),
    )
    return trace_ids, span_ids


def insert_feedback(
    store: Store,
    project: str,
    calls: tuple[list[str], list[str]],
    kind: str,
    texts: list[str] | None = None,
    numbers: list[float] | None = None,
    name: str | None = None,
) -> None:
    """One feedback row of `kind` per call: a text (correction) or a number (thumbs, score)."""
    trace_ids, span_ids = calls
    n = len(trace_ids)
    created = datetime.now(UTC) - timedelta(minutes=5)
    store.insert_arrow(
        "feedback",
        pa.table(
            {
                "project_id": [project] * n,
                "id": [uuid.uuid4().hex for _ in range(n)],
                "trace_id": trace_ids,
                "span_id": span_ids,
                "name": [name or kind] * n,
                "kind": [kind] * n,
                "value_string": texts or [""] * n,
                "value_number": pa.array(numbers or [None] * n, pa.float64()),
                "user_id": ["ann"] * n,
                "source": ["review"] * n,
                "review_id": [uuid.uuid4().hex for _ in range(n)],
                "details": [""] * n,
                "created_at": pa.array([created] * n, pa.timestamp("ms", "UTC")),
                "ingested_at": pa.array([created] * n, pa.timestamp("ms", "UTC")),
            }
        ),
    )


def snapshot(store: Store, project: str, fmt: str = "dpo", fraction: float = 0.25) -> Snapshot:
    """Record a snapshot of the project's feedback, as `driftline export` does."""
    made, _, _ = record_snapshot(store, fmt, ExportFilters(project=project, test_fraction=fraction))
    return made


def untrained(base: Path, folder: Path) -> Path:
    """A candidate that is the base model unchanged, in a folder of its own."""
    shutil.copytree(base, folder)
    return folder


def base_model(folder: Path) -> Path:
    """The tiny Llama with a tokenizer knowing every word of the world, saved to `folder`."""
    words = [{"text": f"tell me about {t} {GOOD} {BAD}".format(topic=t)} for t in TOPICS]
    tokenizer = tokenizer_for(words)
    model = tiny_model(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def insert_scores(store: Store, project: str, topics: list[str] = TOPICS) -> None:
    """A second answer per topic, scored by people on two criteria: the plain wording high,
    the hedge low (alternating topics get one or the other)."""
    for flipped, chosen, scores in (
        (True, topics[::2], (5.0, 4.0)),
        (False, topics[1::2], (1.0, 2.0)),
    ):
        calls = insert_calls(store, project, flipped, chosen)
        for name, score in zip(("accuracy", "helpfulness"), scores, strict=True):
            insert_feedback(
                store, project, calls, "numeric", numbers=[score] * len(chosen), name=name
            )
