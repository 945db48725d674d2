"""docs/benchmarks.md is generated: it is what bench/doc.py renders from the committed records in
docs/benchmarks/, and every number in it comes from a record (so a figure typed by hand fails)."""

from __future__ import annotations

import re
from typing import Any

from bench import doc

# A number as the doc shows it, not part of a word ("L6", "p99", "v2" are names).
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(e[-+]?\d+)?")
# Code is not a figure: commands (the sizes `make bench` runs at are arguments, not results),
# names (`100m`), paths.
CODE = re.compile(r"`[^`]*`")
PLACEHOLDER = re.compile(r"\{[sf]\[[^]]*\][^}]*\}")


def numbers(text: str) -> list[str]:
    return [m.group(0) for m in NUMBER.finditer(CODE.sub("", text))]


def values(item: Any) -> list[float]:
    """Every number in a record: its values and the numbers written in its strings."""
    if isinstance(item, bool):
        return []
    if isinstance(item, int | float):
        return [float(item)]
    if isinstance(item, str):
        return [float(n.replace(",", "")) for n in numbers(item)]
    if isinstance(item, dict):
        item = list(item.values())
    if isinstance(item, list):
        return [v for i in item for v in values(i)]
    return []


def unsourced(text: str, records: list[dict[str, Any]]) -> list[str]:
    """The numbers in `text` that no record holds, as shown (at the precision shown, or as a
    percentage)."""
    found = [abs(v) for v in values(records)]
    shown: dict[str, set[str]] = {}
    missing = []
    for token in numbers(text):
        plain = token.split("e")[0]
        places = len(plain.split(".")[1]) if "." in plain else 0
        spec = f".{places}{'e' if 'e' in token else 'f'}"
        if spec not in shown:
            shown[spec] = {format(x, spec) for v in found for x in (v, v * 100)}
        if format(float(token.replace(",", "")), spec) not in shown[spec]:
            missing.append(token)
    return missing


def sections(text: str) -> list[str]:
    """The doc's `## ` sections, in order, without the introduction."""
    return text.split("\n## ")[1:]


def test_the_doc_is_rendered_from_the_records() -> None:
    assert doc.DOC.read_text() == doc.render(doc.load()), (
        "docs/benchmarks.md differs from its records: it is generated, never edited; "
        "`python bench/run_all.py --render` rewrites it"
    )


def test_every_record_is_a_valid_record_of_a_run() -> None:
    records = doc.load()
    assert records
    for name, record in records.items():
        assert name in doc.RUNS, f"docs/benchmarks/{name}.json is no run of bench/doc.py"
        assert record["bench"] == doc.RUNS[name].script
        assert doc.problems(record) == [], name


def test_every_number_in_the_doc_comes_from_its_sections_records() -> None:
    records = doc.load()
    text = doc.DOC.read_text()
    assert len(sections(text)) == len(doc.SECTIONS)
    assert numbers(text.split("\n## ")[0]) == [], "the introduction holds no figure"
    for section, body in zip(doc.SECTIONS, sections(text), strict=True):
        own = [records[run.name] for run in section.runs if run.name in records]
        assert unsourced(body, own) == [], section.title


def test_a_number_is_sourced_only_by_a_record_value() -> None:
    record = {"stored": 14117.6, "rate": 0.4561, "gap": 6.78e-07, "date": "2026-12-05 16:01 UTC"}
    text = "Stored 14,118 spans/s (46%, 0.456), gap 6.78e-07, on 2026-12-05 16:01 UTC."
    assert unsourced(text, [record]) == []
    typed = "A quieter rerun gave 0.207 s and 13,869 spans/s (`python bench/x.py --n 5`)."
    assert unsourced(text + typed, [record]) == ["0.207", "13,869"]


def test_the_prose_holds_no_number_of_its_own() -> None:
    texts = [doc.INTRO]
    for section in doc.SECTIONS:
        texts += [section.title, section.about, section.reading]
        texts += [text for run in section.runs for text in (run.label, run.reading)]
    for text in texts:
        assert numbers(PLACEHOLDER.sub("", text)) == [], text
