"""Run the benchmarks (each bench script in a subprocess of its own, bounded in time), keep their
records, and render docs/benchmarks.md from the records.

    python bench/run_all.py                  # every run at full size (hours): `make bench`
    python bench/run_all.py --only power     # one run or more (by name), then the doc
    python bench/run_all.py --render         # only the doc, from docs/benchmarks/*.json
    python bench/run_all.py --quick          # the smoke run: every script at a tiny size

Full-size records go to docs/benchmarks/ (committed: the doc is made from them). Smoke-run
records go to bench/results/quick/ with the doc they would make; a smoke run only proves that
every script still runs and writes a valid record. Runs, sizes and time bounds are in
bench/doc.py, beside the prose of each run's section.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import doc, record  # noqa: E402

QUICK = record.RESULTS / "quick"  # the smoke run's records, doc and logs
FULL_LOGS = record.RESULTS / "full"  # full-size runs' logs (their records: docs/benchmarks/)
QUICK_TIMEOUT_S = 120
QUICK_JOBS = 2
WARM_TIMEOUT_S = 600


def execute(run: doc.Run, args: list[str], path: Path, log: Path, timeout_s: int) -> dict[str, Any]:
    """Run `bench/<script>.py args`, its record going to `path` and its output to `log`; the
    record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # bench/ingest.py prints its result rather than writing a record: it is recorded here.
    wrapped = run.script == "ingest"
    recorder = record.Recorder(run.script, path, INGEST_PACKAGES, args) if wrapped else None
    command = [sys.executable, str(ROOT / "bench" / f"{run.script}.py"), *args]
    if not wrapped:
        command += ["--record", str(path)]
    with open(log, "w") as out:
        # A session of its own: on a timeout the script goes with what it started (servers).
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"{run.name}: over {timeout_s} s; log: {log}") from None
    if process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{run.name}: exit {process.returncode}; log: {log}\n{tail}")
    if recorder is not None:
        return ingest_record(recorder, log.read_text())
    return dict(json.loads(path.read_text()))


INGEST_PACKAGES = ("chdb", "fastapi", "uvicorn", "protobuf")
INGEST_TARGET = 50_000
PEAK_TARGET_MB, PEAK_TARGET_SPANS = 500, 14_000  # issue 15: detectors off, as bench/ingest.py runs


def ingest_record(recorder: record.Recorder, output: str) -> dict[str, Any]:
    """The record of bench/ingest.py's run from the JSON object it prints."""
    at = re.search(r"^\{", output, re.M)
    if at is None:
        raise ValueError("bench/ingest.py printed no result")
    r, _ = json.JSONDecoder().raw_decode(output[at.start() :])
    stored = r["stored_spans_per_s"]
    rows = [
        ["spans stored / s (sustained, end to end)", "spans/s", stored],
        ["spans acknowledged / s (durable acks)", "spans/s", r["acked_spans_per_s"]],
        ["ack latency p50", "ms", r["ack_p50_ms"]],
        ["ack latency p99", "ms", r["ack_p99_ms"]],
        ["collector RSS at start", "MiB", r["collector_rss_mib_start"]],
        ["collector RSS, peak", "MiB", r["collector_rss_mib_peak"]],
        ["collector anonymous memory, peak (sampled)", "MiB", r.get("collector_anon_mib_peak")],
        ["retries (429/503)", "", r["retries"]],
        ["payload sent", "MiB", r.get("payload_mib")],
    ]
    tables = [
        record.table(
            "The run",
            [record.col("figure"), record.col("unit"), record.col("value", fmt=",")],
            rows,
        ),
        record.table(
            "Target",
            [record.col("target"), record.col("met")],
            [
                [f"≥ {INGEST_TARGET:,} spans/s stored", stored >= INGEST_TARGET],
                [
                    f"peak RSS ≤ {PEAK_TARGET_MB} MB ({PEAK_TARGET_MB * 10**6 / 2**20:.0f} MiB) "
                    f"while storing ≥ {PEAK_TARGET_SPANS:,} spans/s",
                    r["collector_rss_mib_peak"] * 2**20 <= PEAK_TARGET_MB * 10**6
                    and stored >= PEAK_TARGET_SPANS,
                ],
            ],
        ),
    ]
    settings = {
        "batches": r["batches"],
        "spans_per_batch": r["spans"] // r["batches"],
        "connections": r["connections"],
        "gzip": r.get("gzip", False),
        "env": r.get("env", []),
    }
    return recorder.write(tables, settings)


def attempt(run: doc.Run, quick: bool) -> list[str]:
    """Make `run`'s record (at smoke size with `quick`); what went wrong (nothing: it is valid)."""
    if quick:
        path, size, bound = QUICK / f"{run.name}.json", run.quick or "", QUICK_TIMEOUT_S
        path.unlink(missing_ok=True)  # no record from an earlier smoke run passes for this one
    else:
        path, size, bound = doc.RECORDS / f"{run.name}.json", run.full, run.timeout_s
    log = (QUICK if quick else FULL_LOGS) / f"{run.name}.log"
    started = time.monotonic()
    try:
        found = doc.problems(execute(run, shlex.split(size), path, log, bound))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        found = [str(exc)]
    print(f"{run.name}: {time.monotonic() - started:.0f} s", *found, sep="\n   ", flush=True)
    return found


def warm_static_model() -> None:
    """Distil the static embedder into serve's model cache if it is not there (once a machine,
    as `driftline serve`'s first start does): several smoke runs need it, and on a fresh machine
    it would take a good part of their time bounds."""
    code = (
        "from driftline.detectors.config import DetectorSettings\n"
        "from driftline.detectors.embedder import make_embedder\n"
        "make_embedder(DetectorSettings())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=WARM_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke run (tiny sizes)")
    parser.add_argument("--only", nargs="+", choices=list(doc.RUNS), metavar="NAME")
    parser.add_argument("--render", action="store_true", help="only render the doc")
    args = parser.parse_args()
    if args.render:
        doc.DOC.write_text(doc.render(doc.load()))
        return
    runs = [doc.RUNS[name] for name in args.only] if args.only else list(doc.RUNS.values())
    if args.quick:
        runs = [run for run in runs if run.quick is not None]
    gpu_runs = [run.name for run in runs if run.gpu]
    if gpu_runs and not record.machine()["gpu"]:
        print(f"no GPU here: {', '.join(gpu_runs)} not run")
        runs = [run for run in runs if not run.gpu]
    started = time.monotonic()
    if args.quick:
        warm_static_model()
    # Full-size runs one at a time (they time things); the smoke run's two at a time (much of
    # it waits on servers).
    with ThreadPoolExecutor(QUICK_JOBS if args.quick else 1) as pool:
        outcomes = list(pool.map(lambda run: attempt(run, args.quick), runs))
    failed = [run.name for run, found in zip(runs, outcomes, strict=True) if found]
    print(f"{len(runs) - len(failed)} of {len(runs)} runs in {time.monotonic() - started:.0f} s")
    if args.quick:
        (QUICK / "benchmarks.md").write_text(doc.render(doc.load(QUICK)))
    else:
        doc.DOC.write_text(doc.render(doc.load()))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
