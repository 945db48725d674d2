"""A real peer binary (Prometheus, Alertmanager) run by a test on a loopback port."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


class PeerProcess:
    """Starts `argv`, waits until `url`/-/ready answers (the Prometheus tools' readiness route),
    and stops it again; its output goes to `log`."""

    def __init__(self, name: str, argv: list[str], url: str, log: Path, timeout: float) -> None:
        self.url, self.log = url, log
        self._process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start: " + log.read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
