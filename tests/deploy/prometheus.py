"""A real Prometheus (Debian `prometheus`) on a free loopback port, storage in a tmp folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.peers import PeerProcess

BINARY = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    BINARY is None, reason="Prometheus is not installed (apt-get install prometheus)"
)


class Prometheus:
    """Scrapes `targets` every second and evaluates `rule_files` every second."""

    def __init__(
        self,
        folder: Path,
        targets: list[str],
        rule_files: list[Path],
        token_file: Path | None = None,
    ) -> None:
        assert BINARY is not None
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [
                        {
                            "job_name": "driftline",
                            "static_configs": [{"targets": targets}],
                            **(
                                {"authorization": {"credentials_file": str(token_file)}}
                                if token_file
                                else {}
                            ),
                        }
                    ],
                }
            )
        )
        url = f"http://127.0.0.1:{free_port()}"
        self._peer = PeerProcess(
            "Prometheus",
            [BINARY, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}"],
            url, folder / "prometheus.log", timeout=60,
        )  # fmt: skip
        self.url, self.log = url, self._peer.log

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful API answer; raises with Prometheus's error otherwise."""
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30).json()
        if body["status"] != "success":
            raise AssertionError(f"{params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def stop(self) -> None:
        self._peer.stop()
