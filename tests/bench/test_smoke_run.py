"""The benchmarks' smoke run: every bench script still runs, at a tiny size, and writes a valid
record (`bench/run_all.py --quick`, about two minutes on two cores; its records go to
bench/results/quick/, never to docs/benchmarks/). Its timings mean nothing and are not looked at."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import doc, run_all


@pytest.mark.timeout(400)
def test_smoke_run_of_every_bench_script() -> None:
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick"],
        cwd=doc.ROOT,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = doc.load(run_all.QUICK)
    assert set(records) == {run.name for run in doc.RUNS.values() if run.quick is not None}
    assert all(doc.problems(r) == [] for r in records.values())
    assert (run_all.QUICK / "benchmarks.md").read_text() == doc.render(records)
