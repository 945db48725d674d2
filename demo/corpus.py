"""The demo's real text: Debian packages, where a question about a package is answered by its
description. Five sections of the test fixture `debian_descriptions.jsonl` are shipped as
`data/debian.jsonl.gz` (rebuilt by tests/fixtures/build_demo_corpus.py)."""

from __future__ import annotations

import functools
import gzip
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

SERVICE = "package-helper"  # the app that answers the questions: its service and agent name
SECTIONS = ("database", "editors", "mail", "games", "fonts")
# What the app's users ask about before the drift, and after it (the topic mix shifts).
BEFORE: Mapping[str, float] = {"database": 0.4, "editors": 0.3, "mail": 0.3}
AFTER: Mapping[str, float] = {"games": 0.6, "database": 0.15, "editors": 0.125, "mail": 0.125}
# The degraded model's off-topic answers are descriptions of font packages.
OFF_TOPIC = "fonts"
# The package's name always comes before its synopsis: `find` takes the first name it meets.
QUESTIONS = (
    "What is {name}? {synopsis}",
    "Tell me about {name}: {synopsis}",
    "What does {name} do? {synopsis}",
    "Should I install {name}? {synopsis}",
)


@dataclass(frozen=True)
class Package:
    name: str
    section: str
    synopsis: str
    description: str


class Corpus:
    """The packages by section and by name."""

    def __init__(self, packages: list[Package]) -> None:
        self.packages = packages
        self._by_name = {p.name: p for p in packages}
        self._sections: dict[str, list[Package]] = {}
        for p in packages:
            self._sections.setdefault(p.section, []).append(p)

    def section(self, name: str) -> list[Package]:
        return self._sections[name]

    def find(self, question: str) -> Package | None:
        """The package a question is about: the first word that names one."""
        for word in question.split():
            found = self._by_name.get(word.rstrip("?:,."))
            if found is not None:
                return found
        return None

    def questions(self, mix: Mapping[str, float], n: int, seed: int) -> list[str]:
        """`n` questions whose sections follow `mix`; each section's packages are asked about
        in a shuffled order, all of them before any is asked again."""
        rng = random.Random(seed)
        queues: dict[str, list[Package]] = {s: [] for s in mix}
        out = []
        for section in rng.choices(list(mix), weights=list(mix.values()), k=n):
            if not queues[section]:
                queues[section] = rng.sample(self.section(section), len(self.section(section)))
            package = queues[section].pop()
            template = rng.choice(QUESTIONS)
            out.append(template.format(name=package.name, synopsis=package.synopsis))
        return out

    def texts(self) -> list[str]:
        """Every text a model of this corpus reads or writes."""
        words = [q.format(name="", synopsis="") for q in QUESTIONS]
        return [t for p in self.packages for t in (p.name, p.synopsis, p.description)] + words


@functools.cache
def load() -> Corpus:
    """The shipped corpus."""
    raw = resources.files("driftline.demo.data").joinpath("debian.jsonl.gz").read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]
    return Corpus(
        [Package(r["package"], r["section"], r["synopsis"], r["description"]) for r in rows]
    )
