"""Soak and overload: `driftline serve` on its defaults, detectors on, fed OTLP at a fixed rate.

A load generator sends OTLP/HTTP protobuf batches of realistic GenAI traces (one agent span and
three chat calls; prompts and answers from the Debian fixture; `service.version` 1.0, so the
detectors freeze a per-version reference by themselves and test its windows) at `--rate` LLM
calls per second for `--minutes`. Every 5 s it scrapes the collector's /metrics (calls embedded
and skipped, the embedding lag, calls waiting, windows tested) and the process's RSS.

    python bench/soak.py --rate 50 --minutes 15            # the soak
    python bench/soak.py --rate 40 --minutes 10 --set embedder=transformer   # ~2x its capacity

Its record: a row per minute, and the arrival and embedding rates, the first time the embedded
count moved, the largest lag and the RSS range.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402
from bench.ingest import build_batches, rss_kib  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402

CALLS_PER_TRACE = 3
SERIES = {
    "embedded": "driftline_embedded_calls_total",
    "skipped": "driftline_embedding_skipped_calls_total",
    "lag_s": "driftline_detector_lag_seconds",
    "waiting": "driftline_detector_pending_calls",
}


def fresh(template: bytes, now_ns: int) -> bytes:
    """The batch with new trace ids, start times ending now, and `service.version` 1.0."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    req.ParseFromString(template)
    resource = req.resource_spans[0].resource
    resource.attributes.append(KeyValue(key="service.version", value=AnyValue(string_value="1.0")))
    spans = req.resource_spans[0].scope_spans[0].spans
    trace_id = b""
    for i, s in enumerate(spans):
        if i % (CALLS_PER_TRACE + 1) == 0:
            trace_id = os.urandom(16)
        duration = s.end_time_unix_nano - s.start_time_unix_nano
        s.trace_id = trace_id
        s.start_time_unix_nano = now_ns - duration - (len(spans) - i) * 1000
        s.end_time_unix_nano = s.start_time_unix_nano + duration
    return req.SerializeToString()


def send(url: str, key: str, rate: float, seconds: float, spans: int, sent: dict) -> None:
    """`rate` LLM calls a second, in batches of `spans` spans, for `seconds`."""
    templates = build_batches(16, spans)
    calls = spans // (CALLS_PER_TRACE + 1) * CALLS_PER_TRACE
    interval = calls / rate
    headers = {"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"}
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        n = 0
        while (due := started + n * interval) < started + seconds:
            time.sleep(max(due - time.monotonic(), 0))
            r = client.post(f"{url}/v1/traces", content=fresh(templates[n % 16], time.time_ns()),
                            headers=headers)  # fmt: skip
            if r.status_code == 200:
                sent["calls"] += calls
            else:
                sent["refused"] += calls
            n += 1


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for name, series in SERIES.items():
        match = re.search(rf"^{series} ([0-9.e+-]+)$", text, re.MULTILINE)
        out[name] = float(match.group(1)) if match else 0.0
    windows = re.findall(r"^driftline_drift_windows_total\{[^}]*\} ([0-9.e+-]+)$", text, re.M)
    out["windows"] = sum(float(w) for w in windows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="LLM calls per second")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--spans", type=int, default=0, help="spans a batch (default: by rate)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a detector setting for serve, e.g. --set embedder=transformer",
    )  # fmt: skip
    record.add_argument(parser)
    args = parser.parse_args()
    recorder = record.Recorder("soak", args.record, ["chdb", "torch", "model2vec"])
    env = {"DRIFTLINE_DETECTORS__ENABLED": "true"}
    for item in args.set:
        name, _, value = item.partition("=")
        env[f"DRIFTLINE_DETECTORS__{name.upper()}"] = value
    spans = args.spans or (40 if args.rate <= 200 else 512)
    data = Path(tempfile.mkdtemp(prefix="driftline-soak-")) / "data"
    server = start_server(data, env=env)
    pid = server.process.pid
    sent = {"calls": 0, "refused": 0}
    seconds = args.minutes * 60
    load = threading.Thread(
        target=send, args=(server.url, server.ingest_key, args.rate, seconds, spans, sent)
    )
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    load.start()
    try:
        while load.is_alive():
            time.sleep(5)
            row = {"t": round(time.monotonic() - started), **scrape(server.url),
                   "sent": sent["calls"], "rss_mib": rss_kib(pid, "VmRSS") / 1024}  # fmt: skip
            samples.append(row)
            if row["t"] % 60 < 5:
                print(json.dumps(row), flush=True)
    finally:
        load.join()
        try:
            stop_server(server)
        except subprocess.TimeoutExpired:  # reported below: a stop should take seconds
            print("serve did not stop within 60 s of SIGTERM; killed", flush=True)
            stop_server(server, kill=True)
        shutil.rmtree(data.parent)
    moved = next((s["t"] for s in samples if s["embedded"] > 0), None)
    last = samples[-1]
    half = [s for s in samples if s["t"] >= seconds / 2]
    window = half[-1]["embedded"] + half[-1]["skipped"] - half[0]["embedded"] - half[0]["skipped"]
    result = {
        "rate": args.rate,
        "minutes": args.minutes,
        "sent_calls": sent["calls"],
        "refused_calls": sent["refused"],
        "arrival_per_s": round(sent["calls"] / seconds, 1),
        "embedded": int(last["embedded"]),
        "skipped": int(last["skipped"]),
        "covered_per_s_second_half": round(window / max(half[-1]["t"] - half[0]["t"], 1), 1),
        "embedded_per_s": round(last["embedded"] / last["t"], 1),
        "first_embedded_after_s": moved,
        "max_lag_s": round(max(s["lag_s"] for s in samples), 1),
        "max_lag_s_second_half": round(max(s["lag_s"] for s in half), 1),
        "max_waiting": int(max(s["waiting"] for s in samples)),
        "windows": int(last["windows"]),
        "rss_mib_min": round(min(s["rss_mib"] for s in samples)),
        "rss_mib_max": round(max(s["rss_mib"] for s in samples)),
    }
    minutes = [s for s in samples if s["t"] % 60 < 5]
    keys = ("sent", "embedded", "skipped", "lag_s", "waiting", "windows", "rss_mib")
    tables = [
        record.table(
            "Each minute (scraped from /metrics)",
            [record.col("minute"), record.col("calls sent", fmt=",.0f"),
             record.col("embedded", fmt=",.0f"), record.col("skipped", fmt=",.0f"),
             record.col("lag", "s", ".1f"), record.col("waiting", fmt=",.0f"),
             record.col("windows", fmt=",.0f"), record.col("RSS", "MiB", ",.0f")],
            [[s["t"] // 60, *(s[k] for k in keys)] for s in minutes],
        ),
        record.table(
            "The run",
            [record.col("calls sent", fmt=",d"), record.col("refused", fmt=",d"),
             record.col("arrival", "calls/s", ".1f"), record.col("embedded", fmt=",d"),
             record.col("skipped", fmt=",d"), record.col("embedded", "calls/s", ".1f"),
             record.col("embedded or skipped, second half", "calls/s", ".1f"),
             record.col("first embedded after", "s"), record.col("max lag", "s", ".1f"),
             record.col("max lag, second half", "s", ".1f"), record.col("max waiting", fmt=",d"),
             record.col("windows tested", fmt=",d"), record.col("RSS min", "MiB", ",d"),
             record.col("RSS max", "MiB", ",d")],
            [list(result.values())[2:]],
        ),
    ]  # fmt: skip
    settings = {"rate": args.rate, "minutes": args.minutes, "spans": spans, "set": args.set}
    recorder.write(tables, settings)


if __name__ == "__main__":
    main()
