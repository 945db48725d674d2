"""`driftline detect` and `driftline alerts` serve their own /metrics, as real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.alerts.conftest import failing_calls_folder
from tests.alerts.receiver import Receiver
from tests.cli.test_commands import driftline
from tests.conftest import free_port, wait_for


@contextmanager
def running(log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`driftline ARGS` in the background, its stderr in `log`, terminated on the way out."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def scrape(process: subprocess.Popen[bytes], log: Path, port: int, wanted: str) -> str:
    """The /metrics page once it shows `wanted` (fails early if the process died)."""

    def page() -> str | None:
        assert process.poll() is None, log.read_text()
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            return None
        return text if wanted in text else None

    return wait_for(page, f"{wanted} on :{port}/metrics", timeout=30)


def test_detect_serves_the_detector_metrics(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "detect.log"
    args = ("detect", "--data", str(tmp_path / "data"), "--metrics-port", str(port))
    with running(log, *args) as process:
        text = scrape(process, log, port, "driftline_embedded_calls_total 0.0")
        for family in ("driftline_drift_p_value gauge", "driftline_flags_total counter"):
            assert f"# TYPE {family}\n" in text
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log.read_text()


def test_alerts_serves_the_engine_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = failing_calls_folder(tmp_path / "data")
    port, log = free_port(), tmp_path / "alerts.log"
    with Receiver() as receiver:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "rules:\n  - alert: HighErrorRate\n    when: {metric: {metric: error_rate, above: 0.1,"
            " min_calls: 10}}\nroute: {receiver: hook, group_wait: 0s}\n"
            f"receivers:\n  - name: hook\n    webhook: {{url: '{receiver.url}/hook'}}\n"
        )
        args = ("alerts", "--data", str(data), "--rules", str(rules), "--metrics-port", str(port))
        with running(log, *args) as process:
            firing = 'driftline_alerts{rule="HighErrorRate",state="firing"} 1.0'
            text = scrape(process, log, port, firing)
            assert "driftline_alert_evaluations_total" in text
            process.terminate()
            assert process.wait(timeout=30) == 0, log.read_text()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            refused = driftline(*args[:-1], str(busy))
    assert refused.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in refused.stderr
