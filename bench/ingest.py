"""Ingest benchmark: sustained spans/s *stored*, ack latency and collector memory.

A load generator in its own process sends OTLP/HTTP protobuf batches of 512 realistic GenAI spans
(traces of one agent span and three chat calls; prompts and answers are Debian package synopses and
descriptions, a few hundred characters each) over keep-alive connections to `driftline serve` on
the embedded store. Acks are durable (fsynced write-ahead log). The run ends when every span sent
is in ClickHouse, so the stored rate includes the writer catching up. The collector's peak memory
is its high-water resident set (VmHWM), start included; its private (anonymous) memory, which
leaves out library code mapped from disk, is sampled every 0.2 s.

    python bench/ingest.py [--batches 2000] [--connections 8] [--gzip] [--env NAME=VALUE]

It prints its result as a JSON object; `bench/run_all.py --only ingest` records it in
docs/benchmarks/ and renders docs/benchmarks.md from the record.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server, stop_server  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "debian_descriptions.jsonl"
SYSTEM = (
    "You are the support assistant of a Linux distribution. Answer the user's question about a "
    "package accurately and briefly, and say so when you do not know."
)


def build_batches(count: int, spans_per_batch: int, seed: int = 1) -> list[bytes]:
    """Serialized ExportTraceServiceRequests with fresh ids and advancing timestamps."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tests.factory import genai_attrs, request, span

    rng = random.Random(seed)
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    templates = []
    for _ in range(16):
        spans = []
        for _ in range(spans_per_batch // 4):
            root = span(
                {"gen_ai.agent.name": "support"}, name="agent run", duration_ns=2_000_000_000
            )
            spans.append(root)
            for _ in range(3):
                row = rng.choice(rows)
                attrs = genai_attrs(
                    prompt=f"What is {row['package']} for? I read: {row['synopsis']}",
                    answer=row["description"],
                    model=rng.choice(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"]),
                    **{
                        "gen_ai.system_instructions": json.dumps(
                            [{"type": "text", "content": SYSTEM}]
                        ),
                        "gen_ai.conversation.id": f"conv-{rng.randrange(10**6)}",
                    },
                )
                spans.append(
                    span(
                        attrs,
                        trace_id=root.trace_id,
                        parent=root.span_id,
                        name="chat",
                        duration_ns=rng.randrange(200, 4000) * 1_000_000,
                    )
                )
        templates.append(request(spans, service=rng.choice(["support-bot", "search", "triage"])))
    batches = []
    start = time.time_ns()
    for n in range(count):
        req = ExportTraceServiceRequest()
        req.CopyFrom(templates[n % len(templates)])
        spans = req.resource_spans[0].scope_spans[0].spans
        base = start + n * 5_000_000
        trace_id = b""
        for i, s in enumerate(spans):
            if i % 4 == 0:
                trace_id = os.urandom(16)
            duration = s.end_time_unix_nano - s.start_time_unix_nano
            s.trace_id = trace_id
            s.start_time_unix_nano = base + i * 1000
            s.end_time_unix_nano = base + i * 1000 + duration
        batches.append(req.SerializeToString())
    return batches


def load_generator(
    url: str, key: str, args: argparse.Namespace, ready: mp.Event, go: mp.Event, results: mp.Queue
) -> None:
    batches = build_batches(args.batches, args.spans_per_batch)
    if args.gzip:
        batches = [gzip.compress(b, compresslevel=6) for b in batches]
    ready.set()
    go.wait()
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    cursor = iter(range(len(batches)))

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"}
        if args.gzip:
            headers["content-encoding"] = "gzip"
        while True:
            with lock:
                n = next(cursor, None)
            if n is None:
                break
            while True:
                t0 = time.perf_counter()
                conn.request("POST", "/v1/traces", body=batches[n], headers=headers)
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - t0
                if response.status == 200:
                    with lock:
                        latencies.append(elapsed)
                    break
                with lock:
                    errors.append(response.status)
                time.sleep(float(response.getheader("retry-after", "1")))

    started = time.time()
    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(
        {
            "started": started,
            "finished": time.time(),
            "latencies": latencies,
            "errors": errors,
            "bytes": sum(len(b) for b in batches),
        }
    )


def stored_rows(url: str) -> int:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return int(
        sum(
            float(v)
            for v in re.findall(r"^driftline_store_rows_written_total\{[^}]*\} (\S+)$", text, re.M)
        )
    )


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def revision() -> str:
    """The commit of the collector's code (the `driftline` package the server imports)."""
    import driftline

    where = Path(next(iter(driftline.__path__))).resolve()
    command = ["git", "-C", str(where), "describe", "--always", "--dirty"]
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, Python "
        f"{platform.python_version()}; load average at the end {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--spans-per-batch", type=int, default=512)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--gzip", action="store_true", help="send the batches gzip-compressed")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    total = args.batches * args.spans_per_batch

    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        server = start_server(
            Path(tmp) / "data",
            env={"DRIFTLINE_RATE_LIMIT_PER_SECOND": "0", **dict(e.split("=", 1) for e in args.env)},
        )
        try:
            ctx = mp.get_context("spawn")
            ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
            gen = ctx.Process(
                target=load_generator,
                args=(server.url, server.ingest_key, args, ready, go, results),
            )
            gen.start()
            print(
                f"building {args.batches} batches of {args.spans_per_batch} spans...",
                file=sys.stderr,
            )
            ready.wait()
            base_rss = rss_kib(server.process.pid, "VmRSS")
            t0 = time.time()
            go.set()
            stored = anon_peak = 0
            while stored < total:
                time.sleep(0.2)
                anon_peak = max(anon_peak, rss_kib(server.process.pid, "RssAnon"))
                stored = stored_rows(server.url)
                if time.time() - t0 > 900:
                    raise SystemExit(f"timed out with {stored}/{total} stored")
            t_stored = time.time()
            peak = rss_kib(server.process.pid, "VmHWM")  # the high-water mark, start included
            sent = results.get()
            gen.join()
        finally:
            stop_server(server)

    lat = sorted(sent["latencies"])
    ack_seconds = sent["finished"] - sent["started"]
    store_seconds = t_stored - sent["started"]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "revision": revision(),
        "spans": total,
        "batches": args.batches,
        "connections": args.connections,
        "gzip": args.gzip,
        "env": args.env,
        "acked_spans_per_s": round(total / ack_seconds),
        "stored_spans_per_s": round(total / store_seconds),
        "ack_p50_ms": round(statistics.median(lat) * 1000, 1),
        "ack_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
        "retries": len(sent["errors"]),
        "collector_rss_mib_start": round(base_rss / 1024),
        "collector_rss_mib_peak": round(peak / 1024),
        "collector_anon_mib_peak": round(anon_peak / 1024),
        "payload_mib": round(sent["bytes"] / 2**20),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
