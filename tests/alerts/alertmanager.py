"""A real Alertmanager (Debian `prometheus-alertmanager`) on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.peers import PeerProcess

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_alertmanager = pytest.mark.skipif(
    BINARY is None, reason="Alertmanager is not installed (apt-get install prometheus-alertmanager)"
)


class Alertmanager:
    """Runs with a route that sends every group, resolved ones too, to `webhook_url`."""

    def __init__(self, folder: Path, webhook_url: str) -> None:
        assert BINARY is not None
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: capture\n  group_by: [alertname, project]\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            f"receivers:\n  - name: capture\n    webhook_configs:\n"
            f"      - url: {webhook_url}\n        send_resolved: true\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._peer = PeerProcess(
            "Alertmanager",
            [BINARY, f"--config.file={config}", f"--storage.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             f"--web.external-url={self.url}"],
            self.url, folder / "alertmanager.log", timeout=30,
        )  # fmt: skip
        self.log = self._peer.log

    def alerts(self) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/api/v2/alerts", timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def amtool(self, *args: str) -> str:
        amtool = shutil.which("amtool")
        assert amtool is not None
        done = subprocess.run(
            [amtool, *args, f"--alertmanager.url={self.url}"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return done.stdout

    def stop(self) -> None:
        self._peer.stop()
