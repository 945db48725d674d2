"""One owner per table: only the room whose tables module creates a table writes SQL on it;
other rooms call that room's functions."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pyarrow as pa

from driftline.store import Store
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


def test_only_a_tables_module_writes_sql_on_its_rooms_tables() -> None:
    """Other rooms, and the room's other modules, call its functions."""
    known = owners()
    homes = {module.split(".")[1]: ROOT / "/".join(module.split(".")[1:]) for module in
             TABLE_MODULES}  # fmt: skip
    trespass = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            for table in sorted(tables_named(path, known)):
                home = homes[known[table]].with_suffix(".py")
                if path != home:
                    trespass.append(
                        f"{path.relative_to(ROOT)}: {table} ({home.relative_to(ROOT)}'s)"
                    )
    assert trespass == [], "\n".join(trespass)


def arrow_type(clickhouse: str) -> pa.DataType:
    """The Arrow type driftline inserts for a ClickHouse column type."""
    inner = re.fullmatch(r"(LowCardinality|Nullable)\((.*)\)", clickhouse)
    if inner:
        return arrow_type(inner.group(2))
    if clickhouse in ("String",) or clickhouse.startswith("FixedString"):
        return pa.string()
    if clickhouse.startswith("DateTime64(9"):
        return pa.timestamp("ns", "UTC")
    if clickhouse.startswith("DateTime64(3"):
        return pa.timestamp("ms", "UTC")
    if clickhouse.startswith("Array("):
        return pa.list_(arrow_type(clickhouse[6:-1]))
    if clickhouse.startswith("Map("):
        key, value = clickhouse[4:-1].split(", ", 1)
        return pa.map_(arrow_type(key), arrow_type(value))
    numbers = {"UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(),
               "UInt64": pa.uint64(), "Int8": pa.int8(), "Int32": pa.int32(), "Int64": pa.int64(),
               "Float64": pa.float64(), "Date": pa.date32()}  # fmt: skip
    return numbers[clickhouse]


def test_each_rooms_arrow_schema_is_its_table(store: Store) -> None:
    """Every column a schema writes exists with that type, and every column without a DEFAULT
    is written: the schema is the one place the inserted columns are spelled."""
    checked = []
    for module in TABLE_MODULES:
        for table, schema in getattr(importlib.import_module(module), "SCHEMAS", {}).items():
            columns = {
                row["name"]: row
                for row in store.query(
                    "SELECT name, type, default_kind FROM system.columns "
                    "WHERE database = currentDatabase() AND table = {t:String}",
                    {"t": table},
                )
            }
            assert columns, f"{module}: no table {table}"
            for field in schema:
                assert field.name in columns, f"{table}.{field.name} is not a column"
                expected = arrow_type(columns[field.name]["type"])
                bytes_ok = field.type == pa.binary() and expected == pa.string()  # String is bytes
                assert field.type == expected or bytes_ok, (
                    f"{table}.{field.name}: {field.type} for {columns[field.name]['type']}"
                )
            unwritten = {n for n, c in columns.items() if not c["default_kind"]} - set(schema.names)
            assert not unwritten, f"{table}: {sorted(unwritten)} have no DEFAULT and no field"
            checked.append(table)
    # Written otherwise: calls and spans are decoded from the log's protobuf by chDB
    # (ingest/mapping.py), the rollups and experiment traces by materialized views, keys by SQL
    # (store/keys.py).
    otherwise = {"llm_calls", "spans", "llm_calls_hourly", "call_vector_versions", "projects",
                 "llm_calls_hourly_mv", "call_vector_versions_mv",
                 "api_keys", "call_embeddings", "experiment_traces",
                 "experiment_traces_spans_mv", "experiment_traces_llm_calls_mv"}  # fmt: skip
    assert set(checked) == set(owners()) - otherwise
