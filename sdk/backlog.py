"""Where payloads wait while the collector cannot take them: memory, or a spool folder on disk.

Both keep payloads oldest first and refuse new ones once full, so memory and disk stay bounded;
the caller counts what was refused. The spool survives an app restart: a new process sends the
files an old one left. Several processes may share a folder; a payload sent twice is harmless
because the collector keeps each span and feedback record once.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Protocol

from driftline.sdk.delivery import Payload

_SUFFIX = ".payload"
_RESCAN_SECONDS = 30.0


class Backlog(Protocol):
    def put(self, payload: Payload) -> bool:
        """Keep `payload`; False when there is no room for it."""

    def oldest(self) -> Payload | None: ...

    def remove_oldest(self) -> None: ...

    def __len__(self) -> int: ...


class MemoryBacklog:
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: deque[Payload] = deque()

    def put(self, payload: Payload) -> bool:
        if self._bytes + len(payload.body) > self._max_bytes:
            return False
        self._items.append(payload)
        self._bytes += len(payload.body)
        return True

    def oldest(self) -> Payload | None:
        return self._items[0] if self._items else None

    def remove_oldest(self) -> None:
        self._bytes -= len(self._items.popleft().body)

    def __len__(self) -> int:
        return len(self._items)


class DiskSpool:
    """One file per payload: a JSON header line, then the body. Written to a temporary name,
    synced, then renamed, so a crash mid-write never leaves half a payload."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._seq = 0
        self._files: deque[Path] = deque()
        self._bytes = 0
        self._scanned_at = 0.0
        folder.mkdir(parents=True, exist_ok=True)
        self._scan()

    def put(self, payload: Payload) -> bool:
        header = json.dumps(
            {"path": payload.path, "content_type": payload.content_type, "items": payload.items}
        ).encode()
        size = len(header) + 1 + len(payload.body)
        if self._bytes + size > self._max_bytes:
            return False
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:08d}{_SUFFIX}"
        final = self._folder / name
        temp = self._folder / f".{name}.tmp"
        try:
            with open(temp, "wb") as f:
                f.write(header + b"\n" + payload.body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        except OSError:
            temp.unlink(missing_ok=True)
            return False
        self._files.append(final)
        self._bytes += size
        return True

    def oldest(self) -> Payload | None:
        if not self._files and time.monotonic() - self._scanned_at > _RESCAN_SECONDS:
            self._scan()
        while self._files:
            try:
                raw = self._files[0].read_bytes()
                header, _, body = raw.partition(b"\n")
                meta = json.loads(header)
                return Payload(meta["path"], body, meta["content_type"], int(meta["items"]))
            except FileNotFoundError:  # another process sent it
                self._files.popleft()
            except (OSError, ValueError, KeyError, TypeError):
                self._discard(self._files.popleft())  # unreadable: never retry it
        return None

    def remove_oldest(self) -> None:
        self._discard(self._files.popleft())

    def __len__(self) -> int:
        return len(self._files)

    def _discard(self, path: Path) -> None:
        try:
            self._bytes -= path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
        self._bytes = max(self._bytes, 0)

    def _scan(self) -> None:
        self._scanned_at = time.monotonic()
        files = sorted(self._folder.glob(f"*{_SUFFIX}"))
        self._files = deque(files)
        self._bytes = sum(_size(f) for f in files)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
