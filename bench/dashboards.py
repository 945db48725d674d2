"""Time every shipped Grafana ClickHouse panel on chDB over seeded calls (24 h and 7 d).

Seeds `--calls` LLM calls over 30 days (four services, three models, three versions) plus the
detector, review, alert and fine-tune rows in proportion, with INSERT ... SELECT FROM numbers(),
then runs each panel's SQL as the Grafana plugin would send it (macros expanded, every variable
at "All") `--repeats` times after one warm-up, and reports p50/p95 per panel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.drift import append_docs  # noqa: E402
from deploy.grafana import build  # noqa: E402
from driftline.store import Store, migrate, open_store  # noqa: E402
from tests.deploy.macros import expand  # noqa: E402
from tests.deploy.seed import seed  # noqa: E402

SECTION = "## Dashboards: Grafana panel queries on chDB"
TARGET_MS = 300
ALL = {"project": build.ALL, "service": build.ALL, "model": build.ALL}
# Grafana's interval for a ~1,000-pixel-wide panel, rounded as it rounds them.
RANGES = {"24h": (timedelta(days=1), 60), "7d": (timedelta(days=7), 600)}


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


def report(
    results: list[dict], calls: int, seed_s: float | None, disk_bytes: int, rollup: dict
) -> str:
    seeded = "reused from an earlier run" if seed_s is None else f"seeded in {seed_s:.0f} s"
    lines = [
        f"{calls:,} calls over 30 days {seeded} "
        f"({disk_bytes / 2**20:,.0f} MiB on disk for `llm_calls`; the hourly rollup "
        f"`llm_calls_hourly` {rollup['r']:,} rows, {rollup['b'] / 2**20:,.1f} MiB). Every "
        f"variable at *All*, the worst case; target p95 < {TARGET_MS} ms.",
        "",
        "| dashboard | panel | 24 h p50 / p95 ms | 7 d p50 / p95 ms | meets target |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ok = all(r[k][1] < TARGET_MS for k in RANGES)
        cells = " | ".join(f"{r[k][0]:.0f} / {r[k][1]:.0f}" for k in RANGES)
        lines.append(f"| {r['board']} | {r['title']} | {cells} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", type=Path, help="chDB folder (default: a temporary one)")
    parser.add_argument("--append-docs", action="store_true")
    parser.add_argument(
        "--dashboards", type=Path, default=build.OUT, help="folder of dashboard JSON to time"
    )
    parser.add_argument("--panels", help="only these panel titles, separated by '|'")
    args = parser.parse_args()
    folder = args.data or Path(tempfile.mkdtemp(prefix="driftline-bench-dash-"))
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
        seed(store, args.calls, days=30, now=now)
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
    print(f"{args.calls:,} calls ready in {seeded:.0f} s, {disk / 2**20:.0f} MiB", flush=True)
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
    text = report(results, args.calls, None if reused else seeded, int(disk), rollup)
    print(text)
    if args.append_docs:
        command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        append_docs(text, command, SECTION, "bench/dashboards.py")


if __name__ == "__main__":
    main()
