"""The programs the demo runs: `driftline serve` on the demo's folder, `driftline` commands
against it, and the app; each a child process that is stopped however the demo ends."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from driftline.store import env

T = TypeVar("T")


class DemoError(RuntimeError):
    """A stage did not happen; the message says which and where to look."""


def wait_until(
    condition: Callable[[], T | None],
    what: str,
    timeout: float,
    every: float = 0.5,
    alive: Callable[[], None] = lambda: None,
) -> T:
    """Poll `condition` until it returns something truthy; DemoError naming `what` after
    `timeout` seconds. `alive` raises when what is waited on can no longer come."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        alive()
        if time.monotonic() > deadline:
            raise DemoError(f"{what} within {timeout:.0f} s")
        time.sleep(every)


def free_port(port: int = 0) -> int:
    """`port` if nothing listens on it (0: any free one); DemoError if it is taken."""
    with socket.socket() as s:
        try:
            s.bind((env.DEFAULT_HOST, port))
        except OSError:
            raise DemoError(
                f"port {port} on {env.DEFAULT_HOST} is in use; choose another with --port, or "
                "leave --port out for a free one"
            ) from None
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without the user's DRIFTLINE_* settings (the demo must not
    reach the user's store or keys), plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(env.PREFIX)}
    return {**kept, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


class Children:
    """Every child process the demo starts, stopped on `close()` (terminate, then kill)."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[str]] = []
        self._closed = False

    def start(self, args: list[str], **popen: Any) -> subprocess.Popen[str]:
        if self._closed:
            raise DemoError("the demo is stopping")
        process = subprocess.Popen(args, text=True, **popen)
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[str], grace: float = 30) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ValueError):
            self._running.remove(process)

    def close(self) -> None:
        self._closed = True
        for process in reversed(self._running[:]):
            self.stop(process)


class Service:
    """`driftline serve` on `root`/data, configured by `settings` (environment variables)."""

    def __init__(self, children: Children, root: Path, port: int, settings: dict[str, str]) -> None:
        self.children, self.root, self.port = children, root, port
        self.data = root / "data"
        self.log = root / "serve.log"
        self.url = f"http://{env.DEFAULT_HOST}:{port}"
        self._env = child_env(**settings)
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 180) -> None:
        """Start it and wait until it is ready (the first start on a machine distils the
        embedding model, about 20 s)."""
        with open(self.log, "a") as log:
            self._process = self.children.start(
                [sys.executable, "-m", "driftline.cli", "serve", "--data", str(self.data),
                 "--port", str(self.port), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=self.root,
            )  # fmt: skip

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            return False

        wait_until(ready, f"`driftline serve` was not ready (see {self.log})", timeout,
                   alive=self.check)  # fmt: skip

    def check(self) -> None:
        """DemoError if the server has exited."""
        if self._process is not None and self._process.poll() is not None:
            tail = "\n".join(self.log.read_text().splitlines()[-15:])
            raise DemoError(f"`driftline serve` exited ({self._process.returncode}):\n{tail}")

    def spawn(self, *args: str, **env_vars: str) -> subprocess.Popen[str]:
        """Start `driftline ARGS`: its stdout kept for `finish`, its stderr in a log named
        for the command."""
        with open(self.root / f"{args[0]}.log", "a") as log:
            return self.children.start(
                [sys.executable, "-m", "driftline.cli", *args], stdout=subprocess.PIPE,
                stderr=log, env={**self._env, **env_vars}, cwd=self.root,
            )  # fmt: skip

    def finish(
        self, process: subprocess.Popen[str], timeout: float = 600, ok: tuple[int, ...] = (0,)
    ) -> tuple[int, str]:
        """Wait for a spawned command: its exit status and stdout; DemoError with the end of
        its log when the status is not in `ok`."""
        args = [str(a) for a in process.args[3:]]  # type: ignore[index]
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"`driftline {args[0]}` did not finish within {timeout:.0f} s"
            ) from None
        finally:
            self.children.stop(process)
        if process.returncode not in ok:
            log = self.root / f"{args[0]}.log"
            tail = "\n".join(log.read_text().splitlines()[-10:])
            raise DemoError(f"`driftline {' '.join(args[:2])}` failed ({process.returncode}), "
                            f"see {log}:\n{tail}")  # fmt: skip
        return process.returncode, out

    def command(self, *args: str) -> str:
        """Run `driftline ARGS`; its stdout."""
        return self.finish(self.spawn(*args))[1]


class Api:
    """The running server's HTTP API with one key."""

    def __init__(self, url: str, key: str) -> None:
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", path, params=params)

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.get(path, **params)["items"])

    def post(self, path: str, body: Any) -> Any:
        return self._send("POST", path, json=body)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise DemoError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def metric(self, name: str) -> float:
        """A metric's value summed over its series (0 when it has none yet)."""
        text = self._http.get("/metrics").text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )
