"""Online evaluators: calls graded per second against a local judge, and the memory it holds.

Stores `--calls` LLM calls (the Debian fixture's questions and answers) in a fresh embedded
store, then grades all of them with an `llm_judge` evaluator (sample rate 1, no budget or cost
cap in the way) against a local chat-completions server that answers every request after
`--latency-ms` (a remote judge's round trip), at each `--concurrency`. Reported per
concurrency: calls graded per second end to end (reading the calls, the judge, storing two
feedback rows a call), against the ceiling the latency allows (concurrency / latency), and the
process's resident-set growth while grading (sampled every 5 ms).

    python bench/evaluators.py [--calls 2000] [--latency-ms 50] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from bench.detect_scale import PeakRss, arrive  # noqa: E402
from driftline.evaluators.config import EvaluatorSettings  # noqa: E402
from driftline.evaluators.metrics import EvaluatorMetrics  # noqa: E402
from driftline.evaluators.runner import Evaluator  # noqa: E402
from driftline.review.config import ReviewSettings  # noqa: E402
from driftline.store import Store, migrate, open_store  # noqa: E402
from tests.evaluators.judge_server import JudgeServer, scores  # noqa: E402


def grade(store: Store, url: str, calls: int, concurrency: int, since_ns: int) -> dict[str, float]:
    settings = EvaluatorSettings.model_validate(
        {"kind": "llm_judge", "judge": {"url": url, "model": "grader"},
         "criteria": ["accuracy", "helpfulness"], "sample_rate": 1.0, "daily_budget": 10**9,
         "concurrency": concurrency, "audit_rate": 0, "version": f"c{concurrency}"}
    )  # fmt: skip
    evaluator = Evaluator("bench", settings, ReviewSettings(), EvaluatorMetrics())
    with PeakRss() as rss:
        started = time.perf_counter()
        outcome = evaluator.backfill(store, since_ns, time.time_ns(), batch=500)
        seconds = time.perf_counter() - started
    assert outcome.graded == calls, outcome
    return {"seconds": seconds, "per_s": calls / seconds, "rss_mib": (rss.peak - rss.start) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("evaluators", args.record, ["chdb", "httpx"])
    delay = args.latency_ms / 1000
    judge = JudgeServer(lambda _prompt, _n: (*scores(accuracy=4, helpfulness=3)[:3], delay))
    folder = Path(tempfile.mkdtemp(prefix="driftline-bench-eval-"))
    store = open_store(folder / "data")
    try:
        migrate(store)
        since = time.time_ns()
        arrive(store, args.calls, time.time_ns())
        rows = []
        for concurrency in args.concurrency:
            found = grade(store, judge.url, args.calls, concurrency, since)
            ceiling = concurrency / delay if delay else None
            share = found["per_s"] / ceiling if ceiling else None
            rows.append([concurrency, found["per_s"], ceiling, share, found["rss_mib"]])
            print(concurrency, found, flush=True)
    finally:
        store.close()
        judge.close()
        shutil.rmtree(folder, ignore_errors=True)
    table = record.table(
        f"Grading {args.calls:,} calls (two criteria each) against a judge answering after "
        f"{args.latency_ms:g} ms",
        [record.col("concurrency"), record.col("graded", "calls/s", ",.1f"),
         record.col("ceiling: concurrency ÷ latency", "calls/s", ",.0f"),
         record.col("of the ceiling", "", ".0%"),
         record.col("RSS growth while grading", "MiB", ".1f")],
        rows,
    )  # fmt: skip
    settings = {"calls": args.calls, "latency_ms": args.latency_ms,
                "concurrency": args.concurrency}  # fmt: skip
    recorder.write([table], settings)


if __name__ == "__main__":
    main()
