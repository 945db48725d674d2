"""What keeps the collector's memory to what it uses: the library code it is not running and
the heap it freed given back (each in a fresh interpreter: both act on the whole process), and
query results read a block at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from driftline.store import StoreError
from driftline.store.embedded import EmbeddedStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux and glibc")


def run(code: str) -> dict[str, int]:
    """Run `code` in a fresh interpreter; it prints one JSON object."""
    prelude = textwrap.dedent(
        """
        import json, re

        def mapped(name):
            '''KiB of `name`'s mappings resident, and of them private (anonymous).'''
            rss = anon = 0
            mine = False
            for line in open("/proc/self/smaps"):
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    mine = line.rstrip().endswith(name)
                elif mine and line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif mine and line.startswith("Anonymous:"):
                    anon += int(line.split()[1])
            return rss, anon

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def test_chdb_code_not_running_is_given_back_and_comes_back_when_it_runs(tmp_path: Path) -> None:
    found = run(
        f"""
        from chdb import session
        from driftline.store import resident

        s = session.Session({str(tmp_path)!r})
        query = "SELECT sum(number), toString(max(number)) FROM numbers(100000)"
        first = str(s.query(query, "CSV"))
        before = mapped("_chdb.abi3.so")
        dropped = resident.drop_code_pages()
        after = mapped("_chdb.abi3.so")
        again = str(s.query(query, "CSV"))  # runs from pages mapped again
        print(json.dumps({{
            "before": before[0], "after": after[0], "dropped": dropped >> 10,
            "private_before": before[1], "private_after": after[1], "same": first == again,
        }}))
        """
    )
    assert found["before"] > 100 * 1024, "starting chDB maps well over 100 MiB of its code"
    assert found["after"] < found["before"] / 4
    assert found["dropped"] >= (found["before"] - found["after"]) * 0.9
    # the relocated, private pages are kept: unmapping them would lose them
    assert found["private_after"] == found["private_before"] > 0
    assert found["same"]


@pytest.mark.parametrize("bounded", [False, True])
def test_freed_request_bodies_go_back_to_the_system_once_the_heap_is_bounded(
    bounded: bool,
) -> None:
    """Bodies of half a megabyte, freed between small long-lived objects: glibc's own threshold
    rises past them after the first is freed, and the rest stay in its heap as holes."""
    found = run(
        f"""
        from driftline.store import resident

        if {bounded}:
            resident.bound_heap()
        kept, bodies = [], []
        for n in range(200):
            bodies.append(bytearray(512 * 1024))
            kept.append(bytearray(2000))
            if n == 0:
                bodies.pop()  # freeing one mapped block is what raises glibc's threshold
        full = status("RssAnon")
        bodies.clear()
        print(json.dumps({{"freed": full - status("RssAnon")}}))
        """
    )
    freed_mib = found["freed"] / 1024
    if bounded:
        assert freed_mib > 80, "the bodies' 100 MiB go back"
    else:
        assert freed_mib < 20, "glibc alone keeps them (the control: this test can fail)"


def test_a_result_streamed_in_blocks_is_the_whole_result_and_a_failure_spoils_nothing(
    tmp_path: Path,
) -> None:
    """The writer decodes through `query_arrow_blocks`: every row arrives, in more than one
    block for a big result; a query failing mid-stream, or a consumer failing on a block, leaves
    the engine ready for the next query."""
    store = EmbeddedStore(tmp_path / "ch")
    try:
        blocks: list[pa.Table] = []
        sql = "SELECT number AS n, toString(number) AS s FROM numbers(200000)"
        store.query_arrow_blocks(sql + " SETTINGS max_block_size = 8192", blocks.append)
        assert len(blocks) > 1
        assert pa.concat_tables(blocks).column("n").to_pylist() == list(range(200000))

        failing = "SELECT throwIf(number = 150000, 'boom') AS x FROM numbers(200000)"
        with pytest.raises(StoreError, match="boom"):
            store.query_arrow_blocks(failing + " SETTINGS max_block_size = 8192", lambda b: None)
        assert store.query("SELECT 1 AS x") == [{"x": 1}]

        def refuse(block: pa.Table) -> None:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            store.query_arrow_blocks(sql + " SETTINGS max_block_size = 8192", refuse)
        assert store.query("SELECT 2 AS x") == [{"x": 2}]
    finally:
        store.close()
