"""Time every shipped Grafana ClickHouse panel on chDB over seeded calls (24 h and 7 d).

Seeds `--calls` LLM calls over 30 days (four services, three models, three versions) plus the
detector, review, alert and fine-tune rows in proportion, with INSERT ... SELECT FROM numbers(),
then runs each panel's SQL as the Grafana plugin would send it (macros expanded, every variable
at "All") `--repeats` times after one warm-up, and reports p50/p95 per panel.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from deploy.grafana import build  # noqa: E402
from driftline.store import Store, migrate, open_store  # noqa: E402
from tests.deploy.macros import expand  # noqa: E402
from tests.deploy.seed import seed  # noqa: E402

TARGET_MS = 300
DAYS = 30
ALL = {"project": build.ALL, "service": build.ALL, "model": build.ALL}
# Grafana's interval for a ~1,000-pixel-wide panel, rounded as it rounds them.
RANGES = {"24 h": (timedelta(days=1), 60), "7 d": (timedelta(days=7), 600)}


def panels(folder: Path = build.OUT) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, SQL) of every ClickHouse panel in the dashboards' JSON."""
    found = []
    for path in sorted(folder.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    found.append((path.stem, panel["title"], target["rawSql"]))
    return found


def time_query(store: Store, sql: str, repeats: int) -> tuple[float, float, int]:
    """p50 and p95 in ms over `repeats` runs after a warm-up, and the rows returned."""
    rows = store.query_arrow(sql).num_rows
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        store.query_arrow(sql)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, rows


def panels_table(results: list[dict]) -> dict:
    return record.table(
        "Panel query times, every variable at *All* (the worst case)",
        [record.col("dashboard"), record.col("panel"),
         *(record.col(f"{r} {q}", "ms", ",.0f") for r in RANGES for q in ("p50", "p95")),
         record.col(f"p95 under {TARGET_MS} ms")],
        [[r["board"], r["title"], *(v for k in RANGES for v in r[k][:2]),
          all(r[k][1] < TARGET_MS for k in RANGES)] for r in results],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", type=Path, help="chDB folder (default: a temporary one)")
    parser.add_argument(
        "--dashboards", type=Path, default=build.OUT, help="folder of dashboard JSON to time"
    )
    parser.add_argument("--panels", help="only these panel titles, separated by '|'")
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("dashboards", args.record, ["chdb"])
    folder = args.data or Path(tempfile.mkdtemp(prefix="driftline-bench-dash-"))
    if args.data is None:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store = open_store(folder)
    started = time.perf_counter()
    applied = migrate(store)
    print(f"migrations {applied} applied in {time.perf_counter() - started:.1f} s", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    reused = bool(store.query("SELECT count() AS n FROM llm_calls")[0]["n"])
    if reused:  # a folder seeded by an earlier run: its own `now`
        now = store.query("SELECT max(start_time) AS t FROM llm_calls")[0]["t"]
    else:
        seed(store, args.calls, days=DAYS, now=now)
    # As a long-running server's merges leave them.
    store.command("OPTIMIZE TABLE llm_calls FINAL")
    store.command("OPTIMIZE TABLE llm_calls_hourly FINAL")
    seeded = time.perf_counter() - started
    disk = store.query(
        "SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND table = 'llm_calls' "
        "AND database = currentDatabase()"
    )[0]["b"]
    rollup = store.query(
        "SELECT sum(rows) AS r, sum(bytes_on_disk) AS b FROM system.parts WHERE active "
        "AND table = 'llm_calls_hourly' AND database = currentDatabase()"
    )[0]
    calls = store.query("SELECT count() AS n FROM llm_calls")[0]["n"]
    print(f"{calls:,} calls ready in {seeded:.0f} s, {disk / 2**20:.0f} MiB", flush=True)
    results = []
    wanted = set(args.panels.split("|")) if args.panels else None
    for board, title, sql in panels(args.dashboards):
        if wanted is not None and title not in wanted:
            continue
        row: dict = {"board": board, "title": title}
        for name, (span, step) in RANGES.items():
            row[name] = time_query(store, expand(sql, now - span, now, step, ALL), args.repeats)
        print(json.dumps(row), flush=True)
        results.append(row)
    store.close()
    settings = {"calls": calls, "days": DAYS, "repeats": args.repeats, "target_ms": TARGET_MS}
    figures = {
        "seed_seconds": None if reused else seeded,
        "llm_calls_mib": disk / 2**20,
        "rollup_rows": rollup["r"],
        "rollup_mib": rollup["b"] / 2**20,
    }
    recorder.write([panels_table(results)], settings, figures)


if __name__ == "__main__":
    main()
