"""What bounds the collector's memory past the request bodies: the embedded ClickHouse's limits
(its memory, caches, merge threads, part format), a writer that halves its batch when a batch
passes the per-query memory limit (and sets aside a record that alone never fits), and a log
and a decoder that do not copy a request's bytes on their way."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from driftline.api.config import load_settings
from driftline.ingest import envelope, otlp
from driftline.ingest.wal import WriteAheadLog
from driftline.store import open_store
from driftline.store.embedded import EngineLimits
from driftline.store.files import private_folder
from tests import factory as f
from tests.conftest import ServerProcess, start_server, stop_server, wait_for

MiB = 1 << 20


def test_the_engine_limits_reach_chdb(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        data=tmp_path / "data",
        store_memory_bytes=200 * MiB,
        store_query_memory_bytes=100 * MiB,
        store_cache_bytes=16 * MiB,
        store_background_threads=3,
    )
    limits = settings.engine_limits()
    assert limits == EngineLimits(200 * MiB, 100 * MiB, 16 * MiB, 3)
    with open_store(settings.data, limits=limits) as store:
        server = {
            r["name"]: int(r["value"])
            for r in store.query(
                "SELECT name, value FROM system.server_settings WHERE name IN "
                "('max_server_memory_usage', 'mark_cache_size', 'uncompressed_cache_size', "
                "'background_pool_size')"
            )
        }
        assert server == {
            "max_server_memory_usage": 200 * MiB,
            "mark_cache_size": 8 * MiB,
            "uncompressed_cache_size": 0,
            "background_pool_size": 3,
        }
        query = store.query("SELECT value FROM system.settings WHERE name = 'max_memory_usage'")
        assert int(query[0]["value"]) == 100 * MiB
        parts = store.query(
            "SELECT value FROM system.merge_tree_settings WHERE name = 'min_bytes_for_wide_part'"
        )
        assert int(parts[0]["value"]) == limits.compact_part_bytes


def jemalloc_options(conf: str | None) -> dict[str, str]:
    """chDB's allocator options, as a process that opens the store sees them with JE_MALLOC_CONF
    set to `conf` (None: unset)."""
    script = (
        "import json, re, tempfile\n"
        "from driftline.store import open_store\n"
        "with open_store(tempfile.mkdtemp()) as store:\n"
        "    text = str(store.query('SELECT * FROM system.jemalloc_stats'))\n"
        "print(json.dumps(dict(re.findall(r'opt\\.(\\w+): (\\w+)', text))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JE_MALLOC_CONF"}
    if conf is not None:
        env["JE_MALLOC_CONF"] = conf
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(done.stdout)


def test_chdb_returns_freed_pages_within_a_tenth_of_a_second_unless_told_otherwise() -> None:
    assert jemalloc_options("")["dirty_decay_ms"] == "5000"  # ClickHouse's own, without us
    ours = jemalloc_options(None)
    assert ours["dirty_decay_ms"] == "100" and ours["background_thread"] == "true"
    operator = jemalloc_options("dirty_decay_ms:2000")
    assert operator["dirty_decay_ms"] == "2000" and operator["background_thread"] == "false"


def records(count: int, spans: int) -> list[tuple[bytes, set[str]]]:
    """`count` log records of `spans` GenAI spans each (~2.3 KB a span), with their span ids."""
    made = []
    for _ in range(count):
        batch = [f.span(f.genai_attrs(answer="y" * 2000)) for _ in range(spans)]
        made.append(
            (
                envelope.pack("default", f.request(batch).SerializeToString()),
                {s.span_id.hex() for s in batch},
            )
        )
    return made


def prefilled(data: Path, payloads: list[bytes]) -> None:
    """A data folder whose log already holds `payloads`, as a collector stopped before its
    writer stored them leaves it."""
    private_folder(data)
    wal = WriteAheadLog(data / "wal", 64 * MiB, 1024 * MiB)
    for payload in payloads:
        wal.append(payload)
    wal.close()


def stored(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.findall(
        r'^driftline_store_rows_written_total\{table="llm_calls"\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)


def dead_letters(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(r"^driftline_writer_dead_letter_records_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A data folder and a collector's settings: 32 MiB per query, batches of up to 64 MiB."""
    yield (
        tmp_path / "data",
        {
            "DRIFTLINE_STORE_QUERY_MEMORY_BYTES": str(32 * MiB),
            "DRIFTLINE_WRITER_BATCH_BYTES": str(64 * MiB),
        },
    )


def test_a_batch_past_the_query_memory_limit_is_stored_in_smaller_batches(
    limited: tuple[Path, dict[str, str]],
) -> None:
    data, env = limited
    made = records(32, 200)  # ~15 MiB: decoding it at once needs several times 32 MiB
    prefilled(data, [payload for payload, _ in made])
    server = start_server(data, env=env)
    try:
        total = sum(len(ids) for _, ids in made)
        wait_for(lambda: stored(server) >= total, "every span stored", timeout=240)
        assert stored(server) == total
        assert dead_letters(server) == 0
        assert not list((data / "dead-letter").glob("*"))
    finally:
        stop_server(server)
    assert "passes the store's memory limit" in server.log.read_text()


def test_a_record_that_alone_passes_the_query_memory_limit_is_set_aside(
    limited: tuple[Path, dict[str, str]],
) -> None:
    data, env = limited
    small = records(4, 20)
    huge = records(1, 4000)  # ~9 MiB in one request
    prefilled(data, [small[0][0], small[1][0], huge[0][0], small[2][0], small[3][0]])
    server = start_server(data, env=env)
    try:
        wait_for(lambda: dead_letters(server) == 1, "the huge record set aside", timeout=240)
        total = sum(len(ids) for _, ids in small)
        wait_for(lambda: stored(server) >= total, "the records around it stored", timeout=240)
        assert stored(server) == total
    finally:
        stop_server(server)
    [kept] = list((data / "dead-letter").glob("*.otlp"))
    assert kept.read_bytes() == huge[0][0]  # kept whole, for a replay with a higher limit


def test_a_record_in_parts_is_logged_as_the_record_whole(tmp_path: Path) -> None:
    otlp_bytes = f.request([f.span(f.genai_attrs())]).SerializeToString()
    parts = envelope.pack_parts("alpha", otlp_bytes)
    assert parts[1] is otlp_bytes  # the request's bytes themselves, not a copy
    wal = WriteAheadLog(tmp_path / "wal", MiB, 16 * MiB)
    wal.append(parts)
    wal.append(envelope.pack("alpha", otlp_bytes))
    first, second = wal.read(wal.checkpoint, 16 * MiB)
    assert first.payload == second.payload == envelope.pack("alpha", otlp_bytes)
    assert envelope.unpack(first.payload)[0] == "alpha"
    wal.close()
    reopened = WriteAheadLog(tmp_path / "wal", MiB, 16 * MiB)  # both pass its checksums
    assert [r.payload for r in reopened.read(reopened.checkpoint, 16 * MiB)] == [
        first.payload,
        second.payload,
    ]
    reopened.close()


def test_inflating_reports_every_byte_and_stops_when_told() -> None:
    members = gzip.compress(b"a" * (3 * MiB)) + gzip.compress(b"b" * 100)  # two members
    taken: list[int] = []
    inflated = otlp.decompress(members, "gzip", 8 * MiB, taken.append)
    assert inflated == b"a" * (3 * MiB) + b"b" * 100
    assert sum(taken) == len(inflated) and max(taken) <= MiB  # a MiB at a time

    class Full(Exception):
        pass

    def budget(n: int) -> None:
        taken.append(n)
        if sum(taken) > 2 * MiB:
            raise Full

    taken.clear()
    with pytest.raises(Full):
        otlp.decompress(gzip.compress(b"\0" * (64 * MiB)), "gzip", 64 * MiB, budget)
    assert sum(taken) <= 3 * MiB  # stopped within a step of the budget, not at 64 MiB
    with pytest.raises(otlp.BadRequest, match="truncated"):
        otlp.decompress(gzip.compress(b"x" * MiB)[:-10], "gzip", 8 * MiB)
    with pytest.raises(otlp.TooLarge):
        otlp.decompress(gzip.compress(b"x" * (2 * MiB)), "gzip", MiB)
