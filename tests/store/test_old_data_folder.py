"""A data folder made by driftline before the rooms were split (commit dab74da, schema version 8)
opens with today's code: its tables unchanged (later migrations only add tables), the same
migration numbers, everything it held readable through the API, its keys still valid, and new
data going into it.

The folder is `tests/fixtures/data-v8.tar.gz`, made by the old code's own server, HTTP API and
CLI (tests/fixtures/build_data_v8.py); `data-v8.json` holds its keys, what was put in, and what
the old API answered, which today's API must answer too (on the fields the old one had).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.store import Store, migrate, open_store
from driftline.store.migrations import migrations, schema_version
from tests.conftest import ServerProcess, start_server, stop_server, wait_for

FIXTURES = Path(__file__).parents[1] / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "data-v8.json").read_text())
KEYS: dict[str, str] = MANIFEST["keys"]
OLD = MANIFEST["api"]  # the old server's answers
# As the fixture was made: rows kept forever. With the default retention the server would set a
# TTL of 30 days on `spans` and 90 on `llm_calls`, and the fixture's rows would age out of it.
ENV = {"DRIFTLINE_RETENTION_DAYS": MANIFEST["settings"]["DRIFTLINE_RETENTION_DAYS"]}


def unpack(into: Path) -> Path:
    with tarfile.open(FIXTURES / "data-v8.tar.gz") as tar:
        tar.extractall(into, filter="data")
    return into / "data"


@pytest.fixture
def old_folder(tmp_path: Path) -> Path:
    return unpack(tmp_path)


@pytest.fixture
def old_server(old_folder: Path) -> Iterator[ServerProcess]:
    server = start_server(old_folder, env=ENV)
    yield server
    stop_server(server)


def get(server: ServerProcess, path: str, role: str = "read", **params: Any) -> Any:
    response = httpx.get(server.url + path, params=params, headers=auth(role), timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def auth(role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[role]}"}


def as_old(item: dict[str, Any], old: dict[str, Any] | list[str]) -> dict[str, Any]:
    """`item` on the fields the old answer had; a field it lost shows up as missing."""
    return {k: item.get(k, "<missing>") for k in old}


def digest(item: dict[str, Any]) -> str:
    """As build_data_v8.py hashed each call of the old API's answer."""
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()[:20]


# ---- (a) the schema ----------------------------------------------------------------------------


def tables(store: Store) -> dict[str, Any]:
    """Each table and view as ClickHouse describes it: engine, keys, query, columns."""
    found = {}
    for t in store.query(
        "SELECT name, engine, engine_full, partition_key, sorting_key, primary_key, as_select "
        "FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    ):
        found[t.pop("name")] = t
    for c in store.query(
        "SELECT table, name, type, default_kind, default_expression, compression_codec "
        "FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    ):
        found[c.pop("table")].setdefault("columns", []).append(c)
    return found


def rows(store: Store, described: dict[str, Any]) -> dict[str, int]:
    counts = {}
    for name, table in described.items():
        if table["engine"].endswith("View"):
            continue
        final = " FINAL" if table["engine"] != "MergeTree" else ""
        counts[name] = int(store.query(f"SELECT count() AS n FROM {name}{final}")[0]["n"])
    return counts


def test_migrate_adds_only_what_came_after_and_changes_no_old_table(
    old_folder: Path, tmp_path: Path
) -> None:
    store = open_store(old_folder)
    newer = [m.version for m in migrations() if m.version > 8]
    try:
        assert schema_version(store) == 8
        recorded = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
        before = tables(store)
        assert migrate(store) == newer
        assert migrate(store) == []
        assert schema_version(store) == migrations()[-1].version
        after = tables(store)
        counts = rows(store, after)
        still = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        store.close()
    # Same migration numbers as today's code has up to 8; the old rows untouched (the names are
    # descriptions: today's code joins the rooms' parts of a version, so they may read otherwise).
    assert [r["version"] for r in recorded] == [m.version for m in migrations() if m.version <= 8]
    assert [[r["version"], r["name"]] for r in still[: len(recorded)]] == (
        MANIFEST["schema"]["migrations"]
    )
    assert still[: len(recorded)] == recorded
    # The old tables neither altered nor emptied (but for the calls' and spans' deduplication
    # window, migration 11); later migrations only add tables.
    window = ", non_replicated_deduplication_window = 10000"
    assert all(window in after[name]["engine_full"] for name in ("llm_calls", "spans"))
    unaltered = {
        name: {**after[name], "engine_full": after[name]["engine_full"].replace(window, "")}
        for name in before
    }
    assert unaltered == before
    assert set(after) - set(before) == {
        "review_sessions",
        "otel_metrics",
        "otel_logs",
        "evaluator_progress",
        "evaluator_days",
        "experiment_traces",
        "experiment_traces_spans_mv",
        "experiment_traces_llm_calls_mv",
        "call_flags",
    }
    assert {name: t["engine"] for name, t in before.items()} == MANIFEST["schema"]["engines"]
    assert {name: n for name, n in counts.items() if name in before} == {
        **MANIFEST["schema"]["rows"],
        "schema_migrations": len(still),
    }
    assert counts["llm_calls"] == MANIFEST["counts"]["llm_calls"] == 87
    assert counts["spans"] == MANIFEST["counts"]["spans"]
    assert counts["feedback"] == MANIFEST["counts"]["feedback"]
    assert counts["api_keys"] == 4

    # The same tables as today's DDL makes in a new folder: columns, types, codecs, keys, TTLs.
    fresh = open_store(tmp_path / "fresh")
    try:
        migrate(fresh)
        made_today = tables(fresh)
    finally:
        fresh.close()
    assert sorted(made_today) == sorted(after)
    for name, table in made_today.items():
        assert after[name] == table, name


# ---- (b) reading it back -----------------------------------------------------------------------


def test_the_api_reads_what_the_old_driftline_stored(old_server: ServerProcess) -> None:
    server = old_server
    assert "ingest key" not in server.log.read_text()  # the folder has keys: no first start

    calls = get(server, "/api/calls", limit=1000)
    assert calls["next_cursor"] is None
    items = calls["items"]
    assert len(items) == MANIFEST["counts"]["llm_calls"]
    for item in items:
        assert set(OLD["call_fields"]) <= set(item), item
    found = {
        f"{c['trace_id']}/{c['span_id']}": digest(as_old(c, OLD["call_fields"])) for c in items
    }
    changed = sorted(k for k, d in OLD["calls"].items() if found.get(k) != d)
    assert not changed, f"{len(changed)} calls read differently than the old API read them"
    assert [as_old(c, OLD["newest_calls"][0]) for c in items[:5]] == OLD["newest_calls"]
    assert {(c["trace_id"], c["span_id"]) for c in items} == {
        (t["trace_id"], s) for t in MANIFEST["traces"] for s in t["calls"]
    }

    by_service = MANIFEST["counts"]["calls_by_service"]
    for service, n in by_service.items():
        assert len(get(server, "/api/calls", service=service, limit=1000)["items"]) == n
    (failed,) = get(server, "/api/calls", status="error")["items"]
    assert failed["error_type"] == "RateLimitError" and failed["output_text"] == ""
    billing = get(server, "/api/calls", model="claude-haiku")["items"]
    assert {c["service"] for c in billing} == {"billing-bot"}
    assert all(c["input_text"].startswith("What is ") for c in billing)
    assert all(c["provider"] == "anthropic" for c in billing)
    page = get(server, "/api/calls", limit=50)
    rest = get(server, "/api/calls", limit=50, cursor=page["next_cursor"])
    assert page["items"] + rest["items"] == items

    trace = get(server, f"/api/traces/{MANIFEST['trace_read']}")
    assert trace["trace_id"] == OLD["trace"]["trace_id"]
    assert [as_old(s, o) for s, o in zip(trace["spans"], OLD["trace"]["spans"], strict=True)] == (
        OLD["trace"]["spans"]
    )
    assert [s["type"] for s in trace["spans"]] == ["span", "llm_call", "llm_call"]
    for recorded in MANIFEST["traces"]:
        spans = get(server, f"/api/traces/{recorded['trace_id']}")["spans"]
        expected = {recorded["root"], *recorded["calls"]} - {""}
        assert {s["span_id"] for s in spans} == expected, recorded["trace_id"]

    feedback = get(server, "/api/feedback", limit=1000)["items"]
    assert len(feedback) == MANIFEST["counts"]["feedback"] == 10
    assert [as_old(f, o) for f, o in zip(feedback, OLD["feedback"], strict=True)] == OLD["feedback"]
    by_id = {f["id"]: f for f in feedback}
    for posted in MANIFEST["feedback_posted"]:
        stored = by_id[posted["id"]]
        assert stored["source"] == "api"
        for field in ("trace_id", "name", "value", "correction", "choice", "a", "b", "spans"):
            if field in posted:
                assert stored[field] == posted[field], (field, stored)
    review = MANIFEST["review"]
    judged = [by_id[i] for i in review["feedback_ids"]]
    assert {(f["source"], f["user"], f["review_id"], f["span_id"]) for f in judged} == {
        ("review", "reviewer-ada", review["review_id"], review["span_id"])
    }
    shape = {f["name"]: f.get("value") for f in judged}
    assert shape == {"accuracy": 2, "helpfulness": 3, "label": "off_topic"}

    references = get(server, "/api/references")["items"]
    assert [as_old(r, o) for r, o in zip(references, OLD["references"], strict=True)] == (
        OLD["references"]
    )
    (reference,) = references
    assert (reference["name"], reference["version"], reference["calls"]) == ("support-bot", 1, 52)
    assert reference == {**reference, **MANIFEST["reference"]}

    drift = get(server, "/api/drift")["items"]
    assert [as_old(r, o) for r, o in zip(drift, OLD["drift"], strict=True)] == OLD["drift"]
    assert drift[0]["n_current"] == 30 and drift[0]["n_reference"] == 52
    queue = get(server, "/api/review-queue", limit=1000)["items"]
    assert len(queue) == OLD["review_queue"]


# ---- (c) the old keys, new data ----------------------------------------------------------------


def otlp_json(trace_id: str, span_id: str, prompt: str, answer: str) -> dict[str, Any]:
    now = time.time_ns()
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
        ),
    }
    values = [
        {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
        for k, v in attrs.items()
    ]
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 700_000_000),
        "attributes": values,
        "status": {"code": 1},
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "after-split"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


def driftline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args], env=env, capture_output=True, text=True
    )


def test_old_keys_work_and_new_data_goes_in(old_server: ServerProcess) -> None:
    server = old_server
    url = server.url
    trace_id, span_id = "a" * 16 + os.urandom(8).hex(), os.urandom(8).hex()
    body = otlp_json(trace_id, span_id, "Is the old folder open?", "Yes, unchanged.")

    # Keys are checked before anything else: a wrong one and the wrong role are refused.
    wrong = httpx.post(f"{url}/v1/traces", json=body, headers=auth("read"))
    assert wrong.status_code == 403
    forged = KEYS["ingest"][:-4] + "0000"
    refused = httpx.post(
        f"{url}/v1/traces", json=body, headers={"authorization": f"Bearer {forged}"}
    )
    assert refused.status_code == 401

    sent = httpx.post(f"{url}/v1/traces", json=body, headers=auth("ingest"))
    assert sent.status_code == 200, sent.text
    total = MANIFEST["counts"]["llm_calls"] + 1

    def stored() -> list[dict[str, Any]] | None:
        items = get(server, "/api/calls", limit=1000)["items"]
        return items if len(items) == total else None

    items = wait_for(stored, "the new call stored next to the old ones", 30)
    assert items is not None
    assert (items[0]["trace_id"], items[0]["span_id"]) == (trace_id, span_id)  # the newest
    assert items[0]["service"] == "after-split"
    assert items[0]["input_text"] == "Is the old folder open?"
    assert items[0]["output_text"] == "Yes, unchanged."
    old_ones = {f"{c['trace_id']}/{c['span_id']}" for c in items[1:]}
    assert old_ones == set(OLD["calls"])
    spans = get(server, f"/api/traces/{trace_id}")["spans"]
    assert [s["span_id"] for s in spans] == [span_id]

    # The same span again is stored once (idempotence on the old table).
    again = httpx.post(f"{url}/v1/traces", json=body, headers=auth("ingest"))
    assert again.status_code == 200
    note = {"trace_id": trace_id, "span_id": span_id, "name": "thumbs", "value": False}
    posted = httpx.post(f"{url}/api/feedback", json=note, headers=auth("ingest"))
    assert posted.status_code == 200, posted.text
    (feedback,) = get(server, "/api/feedback", trace_id=trace_id)["items"]
    assert (feedback["value"], feedback["kind"], feedback["source"]) == (False, "boolean", "api")
    assert (
        len(get(server, "/api/feedback", limit=1000)["items"]) == MANIFEST["counts"]["feedback"] + 1
    )
    assert len(get(server, "/api/calls", limit=1000)["items"]) == total

    # The admin key: the folder's keys, listed; a new reference version over the old calls.
    listed = get(server, "/api/admin/keys", "admin")["items"]
    assert {k["key_id"]: k["role"] for k in listed} == {
        key_id: role for role, key_id in MANIFEST["key_ids"].items()
    }
    assert all(not k["revoked"] for k in listed)
    selector = MANIFEST["reference"]["selector"]
    created = httpx.post(
        f"{url}/api/references",
        json={
            "name": "support-bot",
            "service": "support-bot",
            "model": "gpt-4o-mini",
            "until": selector["until"],
        },
        headers=auth("admin"),
    )
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["calls"]) == (2, 52)

    # The review key signs in to the review pages as the reviewer it was made for, and finds the
    # old queue there.
    page = httpx.get(f"{url}/review", headers=auth("review"), params={"status": "all"})
    assert page.status_code == 200 and "reviewer-ada" in page.text
    judged = MANIFEST["review"]
    assert judged["trace_id"] in page.text

    # Today's CLI reaches the server that holds the old folder and sees the same keys.
    listed_cli = driftline("keys", "list", "--data", str(server.data), "--json")
    assert listed_cli.returncode == 0, listed_cli.stderr
    ids = {json.loads(line)["key_id"] for line in listed_cli.stdout.splitlines()}
    assert ids == set(MANIFEST["key_ids"].values())

    # Stopped and opened again: the old and the new rows, at today's schema version.
    stop_server(server)
    store = open_store(server.data)
    try:
        assert schema_version(store) == migrations()[-1].version
        n = store.query("SELECT count() AS n FROM llm_calls FINAL")[0]["n"]
        assert n == total
    finally:
        store.close()
