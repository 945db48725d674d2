"""The data folder's owner: an flock held by `serve`, and how other commands reach that server."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from driftline.store.files import private_folder

LOCK_FILE = "driftline.lock"
CONTROL_FILE = "control.json"


class FolderBusy(RuntimeError):
    """Another process holds the data folder."""


class FolderLock:
    """An exclusive, non-blocking flock; the kernel releases it when the process dies."""

    def __init__(self, data: Path) -> None:
        private_folder(data)
        self.path = data / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> FolderLock:
        handle = open(self.path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FolderBusy(f"{self.path.parent} is in use by another driftline process") from None
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_control(data: Path, url: str, token: str) -> None:
    """Tell local commands where the server is and the operator token it accepts (mode 0600)."""
    path = data / CONTROL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, path)


def read_control(data: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((data / CONTROL_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def remove_control(data: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data / CONTROL_FILE).unlink()
