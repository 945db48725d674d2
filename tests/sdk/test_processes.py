"""The SDK in real app processes: what it imports, an app's own OTel setup, exit and fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.sdk.conftest import LiveCollector


def run_app(code: str, live: LiveCollector | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    if live is not None:
        env.update(DRIFTLINE_ENDPOINT=live.url, DRIFTLINE_API_KEY=live.ingest_key)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_sdk_imports_opentelemetry_only() -> None:
    heavy = run_app(
        """
        import sys
        import driftline.sdk
        from driftline.sdk import init, observe, wrap, feedback
        banned = ("fastapi", "torch", "chdb", "clickhouse_connect", "pyarrow", "openai",
                  "anthropic", "driftline.cli", "driftline.api", "driftline.ingest",
                  "driftline.store", "numpy")
        print(",".join(m for m in banned if m in sys.modules))
        """
    )
    assert heavy == ""


def test_an_apps_own_provider_keeps_its_exporters_and_gains_driftline(live: LiveCollector) -> None:
    trace_id = run_app(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from driftline import sdk

        mine = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(mine))
        trace.set_tracer_provider(provider)
        sdk.init(schedule_delay=0.01)

        @sdk.observe(name="step")
        def step():
            with trace.get_tracer("app").start_as_current_span("app-span"):
                return sdk.current_trace_id()

        trace_id = step()
        assert sdk.flush(10)
        assert sorted(s.name for s in mine.get_finished_spans()) == ["app-span", "step"]
        print(trace_id)
        """,
        live,
    )
    rows = live.rows("spans", trace_id, count=2)
    assert sorted(r["span_name"] for r in rows) == ["app-span", "step"]


def test_spans_are_flushed_at_exit(live: LiveCollector) -> None:
    trace_id = run_app(
        """
        from driftline import sdk
        sdk.init(schedule_delay=60)  # no periodic export before the process ends

        @sdk.observe(name="last-words")
        def last_words():
            return sdk.current_trace_id()

        print(last_words())
        """,
        live,
    )
    assert len(live.rows("spans", trace_id)) == 1


def test_a_forked_child_keeps_sending(live: LiveCollector) -> None:
    trace_ids = run_app(
        """
        import os
        from driftline import sdk
        sdk.init(schedule_delay=0.01)

        @sdk.observe(name="forked")
        def forked():
            return sdk.current_trace_id()

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, forked().encode())
            ok = sdk.flush(10)
            os._exit(0 if ok else 1)
        child_trace = os.read(read, 32).decode()
        _, status = os.waitpid(pid, 0)
        assert status == 0
        print(forked(), child_trace)
        """,
        live,
    ).split()
    for trace_id in trace_ids:
        assert len(live.rows("spans", trace_id)) == 1
