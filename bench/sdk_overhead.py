"""SDK overhead: what `@observe` adds to a call, against a bare OTel span, Langfuse and OpenLLMetry.

One function (a short string and a small dict in, a short formatted string out) is called many
times in six variants, each in its own process (they all want the global tracer provider):

- `plain`: undecorated;
- `otel`: inside `tracer.start_as_current_span`, OTel SDK `TracerProvider` + `BatchSpanProcessor`
  + OTLP/HTTP protobuf exporter (the reference the target is measured against);
- `otel+content`: the same span with the arguments and the result recorded as JSON attributes
  (`input.value`/`output.value`), what the three tracing SDKs below also record (not a target);
- `driftline`: `init(endpoint=..., api_key=...)` and `@observe`;
- `langfuse`: `Langfuse(public_key, secret_key, host=endpoint)` and `from langfuse import observe`;
- `openllmetry`: `Traceloop.init(api_endpoint=endpoint, disable_batch=False)` and `@workflow`.

Every variant exports to the same endpoint, either *reachable* (a sink in its own process that
answers 200 with an empty body to every POST) or *unreachable* (a port where nothing listens).
Batch size 512, queue 8,192 and a 1 s schedule everywhere (driftline's defaults; the OTel
`BatchSpanProcessor`s used by the others get them from `OTEL_BSP_*`); content capture on for all.
Each call is timed on its own with `time.perf_counter_ns` (the ~0.1 µs timer pair is in every
figure, `plain` shows it); the mean is wall time over all measured calls, so it includes what the
SDK's background thread takes from the app's thread; *app CPU* is the app thread's CPU time per
call. Each figure is the median over interleaved rounds. Then `driftline` alone runs a few more
reachable/unreachable pairs (the < 5% target needs more than the rounds on a noisy machine), and
1,000,000 calls with the collector unreachable, sampling RSS every 100,000 calls.

With Langfuse or OpenLLMetry among them, the variants run in their own venv
(bench/results/venv-sdk: the pinned peers in bench/requirements-sdk-peers.txt plus this
checkout's SDK, installed editable without extras), which the script makes on first use, so all
run on the same Python and OpenTelemetry; without them, in this interpreter:

    python bench/sdk_overhead.py --setup          # once (about a minute); implied when missing
    python bench/sdk_overhead.py                  # ~12 min
    python bench/sdk_overhead.py --variants plain,otel,driftline --calls 5000 --seconds 2 \\
        --rounds 1 --pairs 0 --memory-calls 20000 # a quick check, no venv needed

The raw figures go to bench/results/sdk_overhead.json.
A single variant can be run (e.g. under py-spy) against a sink of its own:

    bench/results/venv-sdk/bin/python bench/sdk_overhead.py --sink 4399 &
    bench/results/venv-sdk/bin/python bench/sdk_overhead.py --worker driftline \\
        --endpoint http://127.0.0.1:4399 --calls 200000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import record

SCRIPT = str(Path(__file__).resolve())
ROOT = Path(SCRIPT).parent.parent
RESULTS = ROOT / "bench" / "results"
VENV = RESULTS / "venv-sdk"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "bench" / "requirements-sdk-peers.txt"

VARIANTS = ("plain", "otel", "otel+content", "driftline", "langfuse", "openllmetry")
PEERS = {"langfuse", "openllmetry"}  # the variants that need bench/results/venv-sdk
ENDPOINTS = ("reachable", "unreachable")
QUEUE_SIZE, BATCH_SIZE, SCHEDULE_DELAY_S = 8192, 512, 1.0
RESULT_PREFIX = "RESULT "
TARGET_RATIO = 1.5  # @observe / bare OTel span, median
TARGET_UNREACHABLE = 0.05  # median change with the collector down
FLAT_MIB = 4.0  # RSS growth allowed over the second half of the memory run
PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "langfuse",
    "traceloop-sdk",
    "protobuf",
    "requests",
)


# -- the measured function ------------------------------------------------------------------------


def answer(question: str, options: dict[str, Any]) -> str:
    """Tiny, realistic work: format a reply from the arguments."""
    return f"{options['persona']}: {question.strip()} (t={options['temperature']:.1f})"


QUESTION = "How do I rotate the API key of my project?"
OPTIONS: dict[str, Any] = {"persona": "support", "temperature": 0.2, "max_tokens": 256}


# -- the sink: a collector that takes everything ------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """200 to every request: an empty body for OTLP (an empty ExportTraceServiceResponse is
    zero bytes), `{}` for anything else (Langfuse's API)."""

    protocol_version = "HTTP/1.1"
    counts: dict[str, int] = {"requests": 0, "bytes": 0, "spans": 0}  # noqa: RUF012

    def do_POST(self) -> None:
        body = self._body()
        self.counts["requests"] += 1
        self.counts["bytes"] += len(body)
        if self.path.endswith("/v1/traces"):
            self.counts["spans"] += _count_spans(body, self.headers.get("Content-Encoding"))
            self._reply(b"", "application/x-protobuf")
        else:
            self._reply(b"{}", "application/json")

    def do_PUT(self) -> None:
        self._body()
        self._reply(b"{}", "application/json")

    def do_GET(self) -> None:
        body = json.dumps(self.counts).encode() if self.path == "/__stats" else b"{}"
        self._reply(body, "application/json")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _count_spans(body: bytes, encoding: str | None) -> int:
    """Spans in an OTLP protobuf request (so the table shows what each SDK really sent)."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        if encoding == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    except Exception:
        return 0


def run_sink(port: int) -> None:
    """Serve until killed; print the port first (0 picks a free one)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Sink)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextmanager
def sink_process(python: str) -> Iterator[str]:
    """The sink in a process of its own (so it does not share the app's GIL); yields its URL."""
    proc = subprocess.Popen([python, SCRIPT, "--sink", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def sink_counts(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(endpoint + "/__stats", timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
        return counts


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- one variant, in its own process (inside the venv) ------------------------------------------


Traced = Callable[[str, dict[str, Any]], str]


def build(variant: str, endpoint: str) -> tuple[Traced, Callable[[], None]]:
    """The traced function for `variant`, exporting to `endpoint`, and how to flush it."""
    if variant == "plain":
        return answer, lambda: None
    if variant in ("otel", "otel+content"):
        return _build_otel(endpoint, content=variant == "otel+content")
    if variant == "driftline":
        from driftline.sdk import flush, init, observe

        init(
            endpoint=endpoint,
            api_key="dl-bench",
            service_name="bench",
            capture_content=True,
            max_queue_size=QUEUE_SIZE,
            max_export_batch_size=BATCH_SIZE,
            schedule_delay=SCHEDULE_DELAY_S,
        )

        def flush_all() -> None:
            if not flush(30):
                print("driftline: flush incomplete", file=sys.stderr)

        return observe(answer), flush_all
    if variant == "langfuse":
        from langfuse import Langfuse
        from langfuse import observe as langfuse_observe

        langfuse = Langfuse(
            public_key="pk-lf-bench",
            secret_key="sk-lf-bench",
            host=endpoint,
            flush_at=BATCH_SIZE,
            flush_interval=SCHEDULE_DELAY_S,
        )
        return langfuse_observe(answer), langfuse.flush
    if variant == "openllmetry":
        from opentelemetry import trace
        from traceloop.sdk import Traceloop
        from traceloop.sdk.decorators import workflow

        Traceloop.init(
            app_name="bench",
            api_endpoint=endpoint,
            disable_batch=False,
            telemetry_enabled=False,
        )
        provider: Any = trace.get_tracer_provider()
        return workflow(name="answer")(answer), provider.force_flush
    raise ValueError(f"unknown variant {variant!r}")


def _build_otel(endpoint: str, content: bool) -> tuple[Traced, Callable[[], None]]:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=QUEUE_SIZE,
            max_export_batch_size=BATCH_SIZE,
            schedule_delay_millis=SCHEDULE_DELAY_S * 1000,
        )
    )
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")

    def bare(question: str, options: dict[str, Any]) -> str:
        with tracer.start_as_current_span("answer"):
            return answer(question, options)

    def with_content(question: str, options: dict[str, Any]) -> str:
        with tracer.start_as_current_span("answer") as span:
            span.set_attribute(
                "input.value",
                json.dumps({"question": question, "options": options}, separators=(",", ":")),
            )
            result = answer(question, options)
            span.set_attribute("output.value", result)
            return result

    def flush_all() -> None:
        provider.force_flush()

    return (with_content if content else bare), flush_all


def rss_bytes() -> int:
    try:
        import psutil

        rss: int = psutil.Process().memory_info().rss
        return rss
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")


def timer_floor_ns(count: int = 100_000) -> float:
    clock = time.perf_counter_ns
    samples = array("q", bytes(8 * count))
    for i in range(count):
        t0 = clock()
        samples[i] = clock() - t0
    return statistics.median(samples)


def run_worker(args: argparse.Namespace) -> None:
    """Time up to `args.calls` calls (at most `args.seconds`), or with --rss-every run them all
    and sample RSS; print one RESULT line."""
    fn, flush = build(args.worker, args.endpoint)
    question, options = QUESTION, dict(OPTIONS)
    clock = time.perf_counter_ns
    warm_until = clock() + int(args.seconds * 0.25e9)
    warmed = 0
    while warmed < args.warmup and (warmed % 256 or clock() < warm_until):
        fn(question, options)
        warmed += 1
    out: dict[str, Any] = {"variant": args.worker, "versions": _versions(), "warmup": warmed}
    if args.rss_every:
        rss = [rss_bytes()]
        chunk_us = []
        done = 0
        while done < args.calls:
            n = min(args.rss_every, args.calls - done)
            start = clock()
            for _ in range(n):
                fn(question, options)
            chunk_us.append((clock() - start) / n / 1000)
            done += n
            rss.append(rss_bytes())
        out.update(rss=rss, chunk_mean_us=chunk_us, every=args.rss_every, calls=done)
    else:
        out.update(_timed(fn, question, options, args.calls, args.seconds))
    out["made"] = warmed + out["calls"]
    if args.flush:
        flush()
    if args.worker == "driftline":
        from driftline.sdk import stats
        from driftline.sdk.client import active

        out["driftline_stats"] = stats()
        current = active()
        out["max_backlog_bytes"] = current.config.max_backlog_bytes if current else 0
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    os._exit(0)  # skip exit hooks: with the collector down they would wait out their timeouts


def _timed(
    fn: Traced, question: str, options: dict[str, Any], calls: int, seconds: float
) -> dict[str, Any]:
    """Each call timed alone; stops after `calls` calls or `seconds`, whichever comes first."""
    clock = time.perf_counter_ns
    samples = array("q", bytes(8 * calls))
    count = calls
    cpu0, proc0 = time.thread_time_ns(), time.process_time_ns()
    start = clock()
    deadline = start + int(seconds * 1e9)
    for i in range(calls):
        t0 = clock()
        fn(question, options)
        t1 = clock()
        samples[i] = t1 - t0
        if t1 > deadline:
            count = i + 1
            break
    elapsed = clock() - start
    cpu, proc = time.thread_time_ns() - cpu0, time.process_time_ns() - proc0
    ordered = sorted(samples[:count])
    return {
        "calls": count,
        "median_us": ordered[count // 2] / 1000,
        "p99_us": ordered[min(count - 1, int(count * 0.99))] / 1000,
        "mean_us": elapsed / count / 1000,
        "thread_cpu_us": cpu / count / 1000,
        "process_cpu_us": proc / count / 1000,
        "timer_ns": timer_floor_ns(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        with suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# -- the driver ---------------------------------------------------------------------------------


def setup_venv() -> None:
    """Create bench/results/venv-sdk with the pinned peers and this checkout's SDK."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS), "-e", str(ROOT)], check=True)
    torch = subprocess.run(
        [str(VENV_PYTHON), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    if torch.stdout.strip() != "None":
        sys.exit("venv-sdk has torch installed; it should not (see the requirements file)")


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        # The same queue, batch and schedule for every BatchSpanProcessor (Langfuse, OpenLLMetry).
        OTEL_BSP_MAX_QUEUE_SIZE=str(QUEUE_SIZE),
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE=str(BATCH_SIZE),
        OTEL_BSP_SCHEDULE_DELAY=str(int(SCHEDULE_DELAY_S * 1000)),
        # Content capture on (the default for all three; said explicitly).
        TRACELOOP_TRACE_CONTENT="true",
        LANGFUSE_OBSERVE_DECORATOR_IO_CAPTURE_ENABLED="true",
        # No compression anywhere (driftline's default; Langfuse would gzip on its own).
        OTEL_EXPORTER_OTLP_COMPRESSION="none",
        # OpenLLMetry: spans only (metrics and logs have nothing to measure here), no telemetry.
        TRACELOOP_METRICS_ENABLED="false",
        TRACELOOP_LOGGING_ENABLED="false",
        TRACELOOP_TELEMETRY="false",
        PYTHONHASHSEED="0",
    )
    for name in ("DRIFTLINE_ENDPOINT", "DRIFTLINE_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(name, None)
    return env


def run_one(
    variant: str,
    endpoint: str,
    args: argparse.Namespace,
    *,
    flush: bool = False,
    calls: int | None = None,
    rss_every: int = 0,
) -> dict[str, Any]:
    cmd = [args.python, SCRIPT, "--worker", variant, "--endpoint", endpoint]
    cmd += ["--calls", str(calls or args.calls), "--warmup", str(warmup_calls(args))]
    cmd += ["--seconds", str(args.seconds), "--rss-every", str(rss_every)]
    if flush:
        cmd.append("--flush")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=worker_env(), cwd=RESULTS, timeout=1800
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise RuntimeError(
        f"{variant} worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}"
    )


def warmup_calls(args: argparse.Namespace) -> int:
    return max(args.calls // 10, 1000)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant against both endpoints, `rounds` times, interleaved; then driftline's
    reachable/unreachable pairs; then the memory run."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    load = [os.getloadavg()[0]]
    with sink_process(args.python) as sink:
        down = f"http://127.0.0.1:{free_port()}"
        for round_no in range(args.rounds):
            for variant in args.variants:
                for where in ENDPOINTS:
                    reachable = where == "reachable"
                    before = sink_counts(sink)
                    result = run_one(variant, sink if reachable else down, args, flush=reachable)
                    after = sink_counts(sink)
                    for key in ("bytes", "requests", "spans"):
                        result["sink_" + key] = after[key] - before[key]
                    runs.setdefault((variant, where), []).append(result)
                    load.append(os.getloadavg()[0])
                    print(
                        f"round {round_no + 1} {variant:12s} {where:11s} "
                        f"{result['calls']:7d} calls  median {result['median_us']:8.2f} µs  "
                        f"p99 {result['p99_us']:9.2f} µs  mean {result['mean_us']:8.2f} µs  "
                        f"cpu {result['thread_cpu_us']:8.2f} µs",
                        file=sys.stderr,
                        flush=True,
                    )
        pairs = []
        for pair_no in range(args.pairs if "driftline" in args.variants else 0):
            # driftline alone, reachable and unreachable back to back (order alternating), for
            # the unreachable-vs-reachable comparison that machine noise would otherwise swamp.
            pair: dict[str, float] = {}
            for where in ENDPOINTS if pair_no % 2 == 0 else ENDPOINTS[::-1]:
                reachable = where == "reachable"
                result = run_one("driftline", sink if reachable else down, args, flush=reachable)
                pair[where] = result["median_us"]
                pair[where + "_cpu"] = result["thread_cpu_us"]
            pairs.append(pair)
            load.append(os.getloadavg()[0])
            change = pair["unreachable"] / pair["reachable"] - 1
            print(
                f"pair {pair_no + 1} driftline unreachable vs reachable {change:+.1%}",
                file=sys.stderr,
            )
    memory = None
    if args.memory_calls and "driftline" in args.variants:
        print(f"memory: driftline, unreachable, {args.memory_calls:,} calls", file=sys.stderr)
        down = f"http://127.0.0.1:{free_port()}"
        every = max(args.memory_calls // 10, 1)
        memory = run_one("driftline", down, args, calls=args.memory_calls, rss_every=every)
        load.append(os.getloadavg()[0])
    return {"runs": runs, "memory": memory, "load": load, "pairs": pairs}


FIGURES = (
    "calls",
    "median_us",
    "p99_us",
    "mean_us",
    "thread_cpu_us",
    "process_cpu_us",
    "sink_bytes",
    "sink_spans",
    "made",
    "timer_ns",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median over rounds of each run's figure (rounds absorb a noisy machine)."""
    return {key: statistics.median(run[key] for run in runs) for key in FIGURES}


def tables(args: argparse.Namespace, data: dict[str, Any]) -> list[dict[str, Any]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = data["runs"]
    summary = {key: summarize(value) for key, value in runs.items()}
    rows = []
    for variant in args.variants:
        for where in ENDPOINTS:
            row = summary.get((variant, where))
            if row is None:
                continue
            ref = summary.get(("otel", where))
            received = size = None
            if where == "reachable" and variant != "plain":
                received = row["sink_spans"] / row["made"]
                size = row["sink_bytes"] / max(row["sink_spans"], 1)
            rows.append(
                [f"**{variant}**" if variant == "driftline" else variant, where, row["calls"],
                 row["median_us"], row["p99_us"], row["mean_us"], row["thread_cpu_us"],
                 row["process_cpu_us"], ref and row["median_us"] / ref["median_us"],
                 ref and row["thread_cpu_us"] / ref["thread_cpu_us"], received, size]
            )  # fmt: skip
    out = [
        record.table(
            f"Per call, the median over {args.rounds} interleaved rounds",
            [record.col("variant"), record.col("endpoint"), record.col("calls timed", fmt=",.0f"),
             record.col("median", "µs", ".2f"), record.col("p99", "µs", ".1f"),
             record.col("mean", "µs", ".2f"), record.col("app CPU", "µs", ".2f"),
             record.col("process CPU", "µs", ".2f"), record.col("median x otel", fmt=".2f"),
             record.col("app CPU x otel", fmt=".2f"), record.col("spans received", fmt=".0%"),
             record.col("bytes / span", fmt=".0f")],
            rows,
        )
    ]  # fmt: skip
    reach = runs.get(("driftline", "reachable"), [])
    unreach = runs.get(("driftline", "unreachable"), [])
    pairs = [[a["median_us"], b["median_us"]] for a, b in zip(reach, unreach, strict=False)]
    pairs += [[pair["reachable"], pair["unreachable"]] for pair in data["pairs"]]
    if pairs:
        out.append(
            record.table(
                "driftline, collector reachable and unreachable back to back (the rounds, then "
                "the extra pairs)",
                [record.col("median, reachable", "µs", ".2f"),
                 record.col("median, unreachable", "µs", ".2f"), record.col("change", fmt="+.0%")],
                [[a, b, b / a - 1] for a, b in pairs],
            )
        )  # fmt: skip
    memory = data.get("memory")
    if memory:
        out.append(
            record.table(
                f"driftline, collector unreachable: RSS every {memory['every']:,} calls",
                [record.col("calls", fmt=",d"), record.col("RSS", "MiB", ".1f"),
                 record.col("mean of the chunk before", "µs / call", ".1f")],
                [[i * memory["every"], rss / 2**20, ([None, *memory["chunk_mean_us"]])[i]]
                 for i, rss in enumerate(memory["rss"])],
            )
        )  # fmt: skip
    out.append(
        record.table(
            "Targets",
            [record.col("target"), record.col("measured"), record.col("met")],
            targets(summary, memory, [b / a - 1 for a, b in pairs]),
        )
    )
    return out


def targets(
    summary: dict[tuple[str, str], dict[str, float]],
    memory: dict[str, Any] | None,
    paired: list[float],
) -> list[list[Any]]:
    out: list[list[Any]] = []
    dl, otel = summary.get(("driftline", "reachable")), summary.get(("otel", "reachable"))
    if dl and otel:
        ratio = dl["median_us"] / otel["median_us"]
        cpu = dl["thread_cpu_us"] / otel["thread_cpu_us"]
        out.append(
            [f"`@observe` ≤ {TARGET_RATIO}x a bare OTel span (median, reachable)",
             f"{ratio:.2f}x ({dl['median_us']:.2f} vs {otel['median_us']:.2f} µs; app CPU "
             f"{cpu:.2f}x)", ratio <= TARGET_RATIO]
        )  # fmt: skip
    for peer in ("langfuse", "openllmetry"):
        row = summary.get((peer, "reachable"))
        if dl and row:
            out.append(
                [f"`@observe` cheaper than {peer} (median, reachable)",
                 f"{dl['median_us']:.2f} vs {row['median_us']:.2f} µs (app CPU "
                 f"{dl['thread_cpu_us']:.2f} vs {row['thread_cpu_us']:.2f})",
                 dl["median_us"] < row["median_us"]]
            )  # fmt: skip
    if paired:
        change = statistics.median(paired)
        spread = max(paired) - min(paired)
        noise = (
            f"; pairs spread over {spread:.0%}, so a {TARGET_UNREACHABLE:.0%} effect is within "
            "noise"
            if spread > 2 * TARGET_UNREACHABLE
            else ""
        )
        out.append(
            [f"collector unreachable moves driftline's median < {TARGET_UNREACHABLE:.0%}",
             f"{change:+.1%}, the median of {len(paired)} pairs{noise}",
             abs(change) < TARGET_UNREACHABLE]
        )  # fmt: skip
    if memory:
        mib = [value / 2**20 for value in memory["rss"]]
        half = len(mib) // 2
        late = mib[-1] - mib[half]
        stats = memory.get("driftline_stats", {})
        reasons = ", ".join(f"{k}: {v:,}" for k, v in stats.get("dropped_by_reason", {}).items())
        out.append(
            [f"memory flat over {memory['calls']:,} calls with the collector unreachable (RSS "
             f"growth over the second half < {FLAT_MIB:.0f} MiB)",
             f"{late:+.1f} MiB from call {memory['every'] * half:,} to the end; at the end "
             f"{stats.get('spans_sent', 0):,} spans sent, {stats.get('backlog_payloads', 0)} "
             f"payloads in the memory backlog (`max_backlog_bytes` "
             f"{memory.get('max_backlog_bytes', 0) / 2**20:.0f} MiB), dropped "
             f"{reasons or 'none'}", late < FLAT_MIB]
        )  # fmt: skip
    return out


def _floor(summary: dict[tuple[str, str], dict[str, float]]) -> float:
    """The timer pair's own cost (µs), which every figure includes."""
    floors = [row["timer_ns"] for row in summary.values()]
    return statistics.median(floors) / 1000 if floors else 0.0


def worker_python(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="timed calls per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--pairs", type=int, default=5, help="extra driftline reachable/unreachable pairs"
    )
    parser.add_argument("--memory-calls", type=int, default=1_000_000, help="0 skips it")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--setup", action="store_true", help="(re)install the venv and exit")
    # internal modes
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20_000, help=argparse.SUPPRESS)
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="time cap per run (calls stop early)"
    )
    parser.add_argument("--rss-every", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--flush", action="store_true", help=argparse.SUPPRESS)
    record.add_argument(parser)
    args = parser.parse_args()
    if args.sink is not None:
        run_sink(args.sink)
        return
    if args.worker:
        run_worker(args)
        return
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    peers = args.setup or bool(PEERS & set(args.variants))
    if peers and (args.setup or not VENV_PYTHON.exists()):
        setup_venv()
        if args.setup:
            return
    args.python = str(VENV_PYTHON) if peers else sys.executable
    recorder = record.Recorder("sdk_overhead", args.record)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = measure(args)
    raw = {**data, "runs": [[*key, value] for key, value in data["runs"].items()]}
    (RESULTS / "sdk_overhead.json").write_text(json.dumps(raw, indent=1))
    versions: dict[str, str] = {}
    for value in data["runs"].values():
        versions.update(value[0]["versions"])
    summary = {key: summarize(value) for key, value in data["runs"].items()}
    settings = {
        "variants": args.variants,
        "calls": args.calls,
        "seconds": args.seconds,
        "warmup": warmup_calls(args),
        "rounds": args.rounds,
        "pairs": args.pairs,
        "memory_calls": args.memory_calls,
        "batch": BATCH_SIZE,
        "queue": QUEUE_SIZE,
        "schedule_s": SCHEDULE_DELAY_S,
        "venv": "bench/results/venv-sdk" if peers else "this interpreter",
        "worker_python": worker_python(args.python),
        "timer_floor_us": _floor(summary),
    }
    recorder.write(tables(args, data), settings, extra_versions=versions)


if __name__ == "__main__":
    main()
