"""One owner per table: only the room whose tables module creates a table writes SQL on it;
other rooms call that room's functions."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from driftline.store.migrations import TABLE_MODULES, migrations

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("store", "ingest", "detectors", "review", "finetune", "alerts", "api", "cli")
_CREATED = re.compile(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS (\w+)")
_USED = re.compile(r"\b(?:FROM|JOIN|INTO|TABLE)\s+\(?\s*(\w+)")


def owners() -> dict[str, str]:
    """table → the room whose tables module creates it."""
    found = {}
    for module in TABLE_MODULES:
        room = module.split(".")[1]
        for migration in importlib.import_module(module).MIGRATIONS:
            for statement in migration.statements:
                for table in _CREATED.findall(statement):
                    found[table] = room
    return found


# A migration that moves data once (a backfill) may read what an earlier room stored.
HISTORY = {s for m in migrations() for s in m.statements}


def tables_named(path: Path, known: dict[str, str]) -> set[str]:
    """Tables a module's string literals name in SQL, or hand to `insert_arrow`."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in HISTORY:
                continue
            named |= {t for t in _USED.findall(node.value) if t in known}
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "insert_arrow"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            named.add(node.args[0].value)
    return named


def test_every_table_has_one_owner_room() -> None:
    known = owners()
    assert {"llm_calls", "feedback", "review_queue", "alerts", "model_versions"} <= set(known)
    assert known["llm_calls"] == "ingest" and known["feedback"] == "review"


def test_no_room_writes_sql_against_another_rooms_table() -> None:
    known = owners()
    trespass = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            for table in sorted(tables_named(path, known)):
                if known[table] != room:
                    trespass.append(f"{path.relative_to(ROOT)}: {table} ({known[table]}'s)")
    assert trespass == [], "\n".join(trespass)
