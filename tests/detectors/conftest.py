"""Real text for detector tests: Debian package descriptions (synopsis = prompt, description =
response, section = topic), embedded once per test session with the bundled model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from driftline import sdk
from driftline.detectors.embedder import Embedder
from driftline.detectors.embeddings import EmbeddingJob
from driftline.sdk import observe
from driftline.store import Store

FIXTURE = Path(__file__).parent.parent / "fixtures" / "debian_descriptions.jsonl"
SECTIONS = ("admin", "database", "devel", "doc", "editors", "games", "fonts", "golang")


@dataclass(frozen=True)
class Corpus:
    prompts: list[str]
    responses: list[str]
    sections: np.ndarray
    prompt_vectors: np.ndarray
    response_vectors: np.ndarray

    def where(self, *sections: str) -> np.ndarray:
        """Row indices of the given sections."""
        return np.flatnonzero(np.isin(self.sections, sections))


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(max_seq_length=128)


@pytest.fixture(scope="session")
def corpus(embedder: Embedder) -> Corpus:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows = [r for r in rows if r["section"] in SECTIONS]
    rows.sort(key=lambda r: (r["section"], r["package"]))
    prompts = [f"What is {r['package']}? {r['synopsis']}" for r in rows]
    responses = [r["description"] for r in rows]
    return Corpus(
        prompts,
        responses,
        np.array([r["section"] for r in rows]),
        embedder.encode(prompts),
        embedder.encode(responses),
    )


BASE_NS = 1_790_000_000 * 10**9  # 2026-09-21
MIX = ("admin", "database", "devel", "doc", "editors")


class CorpusEmbedder:
    """The corpus's vectors looked up by text: calls go through the real embedding path (the
    job's `embed`, into call_vectors) without encoding the corpus again."""

    def __init__(self, corpus: Corpus, embedder: Embedder) -> None:
        self.name, self.dimension = embedder.name, embedder.dimension
        self._vectors = {
            **dict(zip(corpus.prompts, corpus.prompt_vectors, strict=True)),
            **dict(zip(corpus.responses, corpus.response_vectors, strict=True)),
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 1))


def store_calls(
    store: Store,
    start: int,
    count: int,
    first_ns: int,
    prompts: Sequence[str],
    answers: Sequence[str],
    step_ns: int = 10**9,
    **columns: Any,
) -> list[str]:
    """`count` chat calls of service "bot" in project alpha, one per `step_ns` from `first_ns`,
    ids numbered from `start`; returns their trace ids."""
    trace_ids = [f"{start + i:032x}" for i in range(count)]
    times = pa.array([first_ns + i * step_ns for i in range(count)], pa.timestamp("ns", "UTC"))
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": ["alpha"] * count,
                "trace_id": trace_ids,
                "span_id": [f"{start + i:016x}" for i in range(count)],
                "start_time": times,
                "end_time": times,
                "service": ["bot"] * count,
                "operation": ["chat"] * count,
                "input_text": list(prompts),
                "output_text": list(answers),
                **columns,
            }
        ),
    )
    return trace_ids


def insert_calls(
    store: Store,
    corpus: Corpus,
    embedder: Embedder,
    rows: np.ndarray,
    start: int,
    responses: np.ndarray | None = None,
) -> list[str]:
    """Store calls (prompt of row i, response of responses[i]) with their embeddings."""
    responses = rows if responses is None else responses
    n = len(rows)
    first, last = BASE_NS + start * 10**9, BASE_NS + (start + n - 1) * 10**9
    trace_ids = store_calls(
        store, start, n, first,
        [corpus.prompts[i] for i in rows], [corpus.responses[i] for i in responses],
        response_model=["m1"] * n,
        duration_ms=[800.0 + (i % 7) * 10 for i in range(n)],
        output_tokens=pa.array([120 + i % 11 for i in range(n)], pa.uint32()),
        finish_reasons=[["stop"]] * n,
    )  # fmt: skip
    job = EmbeddingJob(store, CorpusEmbedder(corpus, embedder))
    job.embed_where(
        "alpha",
        "c.start_time >= fromUnixTimestamp64Nano({first:Int64}, 'UTC') "
        "AND c.start_time <= fromUnixTimestamp64Nano({last:Int64}, 'UTC')",
        {"first": first, "last": last},
    )
    return trace_ids


def split(corpus: Corpus, sections: tuple[str, ...], per_section: int, skip: int) -> np.ndarray:
    """Rows `skip` to `skip + per_section` of each section, in one fixed shuffled order (the
    fixture is sorted by package name, and name ranges differ in topic: lib*, python3-*)."""
    return np.concatenate(
        [np.random.default_rng(0).permutation(corpus.where(s))[skip : skip + per_section]
         for s in sections]
    )  # fmt: skip


def texts(sections: tuple[str, ...], per_section: int, skip: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of the fixture's sections, in a fixed shuffled order."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    pairs = []
    for section in sections:
        chosen = [r for r in rows if r["section"] == section]
        order = np.random.default_rng(0).permutation(len(chosen))[skip : skip + per_section]
        for i in order:
            row = chosen[i]
            pairs.append((f"What is {row['package']}? {row['synopsis']}", row["description"]))
    return pairs


REPLIES: dict[str, str] = {}


@observe(as_type="llm", name="answer")
def answer(prompt: str) -> str:
    """A stand-in model: its input is the prompt alone, its output the scripted answer."""
    return REPLIES[prompt]


def send(pairs: list[tuple[str, str]]) -> None:
    for prompt, reply in pairs:
        REPLIES[prompt] = reply
        answer(prompt)
    assert sdk.flush(timeout=30)
