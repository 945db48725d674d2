"""Real text for detector tests: Debian package descriptions (synopsis = prompt, description =
response, section = topic), embedded once per test session with the bundled model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from driftline.detectors.embedder import Embedder

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
