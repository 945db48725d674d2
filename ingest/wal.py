"""Write-ahead log: a request is acknowledged only once its bytes are fsynced here.

Segments `NNNNNNNNNNNN.wal` hold records `magic | length | crc32 | payload`. One thread appends
and fsyncs everything that arrived since its last fsync (group commit), so concurrent requests
share one disk flush. The writer reads records back in order and, once they are in the store,
moves the checkpoint past them; segments wholly behind the checkpoint are deleted.

A record may be handed over in parts (the envelope around a request's bytes): they are written
with one `writev`, never joined, so a request's bytes are not copied on their way to disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from driftline.store.files import FILE_MODE, private_folder

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<4sII")
_MAGIC = b"DLW1"
_CHECKPOINT = "checkpoint"
_IOV_MAX = 1024  # buffers one writev takes (Linux's IOV_MAX)
Payload = bytes | Sequence[bytes]  # a record whole, or its parts in order


class WalFull(Exception):
    """The unstored backlog would exceed the disk budget."""


class WalClosed(Exception):
    """The collector is shutting down and takes no more records."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True)
class Record:
    payload: bytes
    end: Position  # where the next record starts; commit this once the record is stored


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write `parts` in order, whole, with as few `writev` calls as the kernel allows."""
    views = [memoryview(part) for part in parts if len(part)]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        while written and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:  # a short write inside a part: the rest of it next
            views[first] = views[first][written:]


def write_durably(path: Path, data: bytes) -> None:
    """Write a whole file through a temporary name; on disk, name included, when this returns."""
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class WriteAheadLog:
    def __init__(self, directory: Path, segment_bytes: int, budget_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.budget_bytes = budget_bytes
        private_folder(directory)
        self._checkpoint = self._read_checkpoint()
        existing = self._segments()
        # Never append to a segment a crash may have left with a torn tail: start a new one.
        if existing:
            self._segment = existing[-1] + 1
        else:
            self._segment = self._checkpoint.segment + (1 if self._checkpoint.offset else 0)
        self._sizes = {n: self._recover(n) for n in existing}
        self._backlog = sum(self._sizes.values()) - (
            self._checkpoint.offset if self._checkpoint.segment in self._sizes else 0
        )
        self._backlog -= sum(s for n, s in self._sizes.items() if n < self._checkpoint.segment)
        self._fd = self._open_segment(self._segment)
        self._broken: OSError | None = None
        self._sizes[self._segment] = 0
        self._durable = Position(self._segment, 0)
        self._pending: list[tuple[list[bytes], Future[None]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="driftline-wal", daemon=True)
        self._thread.start()

    # ---- appending -------------------------------------------------------------------------

    def submit(self, payload: Payload) -> Future[None]:
        """Queue a record (whole, or its parts); the future completes once it is on disk
        (fsynced)."""
        parts = [payload] if isinstance(payload, bytes | bytearray | memoryview) else payload
        length, crc = 0, 0
        for part in parts:
            length, crc = length + len(part), zlib.crc32(part, crc)
        record = [_HEADER.pack(_MAGIC, length, crc), *parts]
        size = _HEADER.size + length
        future: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise WalClosed("the write-ahead log is closed")
            if self._broken is not None:
                raise WalClosed(f"the write-ahead log cannot write ({self._broken}); restart")
            if self._backlog + size > self.budget_bytes:
                raise WalFull(
                    f"write-ahead log backlog {self._backlog} bytes would pass its budget of "
                    f"{self.budget_bytes} bytes"
                )
            self._backlog += size
            self._pending.append((record, future))
            self._cond.notify_all()
        return future

    def append(self, payload: Payload) -> None:
        """Append and wait until the record is durable."""
        self.submit(payload).result()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending, []
            try:
                self._write([part for record, _ in batch for part in record])
            except BaseException as exc:  # a failed fsync must fail every waiting request
                log.exception("write-ahead log append failed")
                with self._cond:
                    self._backlog -= sum(len(part) for record, _ in batch for part in record)
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for _, future in batch:
                future.set_result(None)

    def _write(self, parts: list[bytes]) -> None:
        total = sum(len(part) for part in parts)
        size = self._sizes[self._segment]
        if size and size + total > self.segment_bytes:
            self._rotate()
            size = 0
        try:
            _write_all(self._fd, parts)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._undo(size, exc)
            raise
        with self._cond:
            self._sizes[self._segment] = size + total
            self._durable = Position(self._segment, size + total)
            self._cond.notify_all()

    def _undo(self, size: int, cause: OSError) -> None:
        """Cut a failed append off the segment, so no later record sits behind torn bytes.

        If even that fails the log stops taking records (ingest answers 503) until a restart,
        whose recovery keeps every record with a valid checksum.
        """
        try:
            os.ftruncate(self._fd, size)
            os.fdatasync(self._fd)
        except OSError as exc:
            log.critical("write-ahead log cannot undo a failed append (%s); refusing writes", exc)
            with self._cond:
                self._broken = cause

    def _rotate(self) -> None:
        """Start the next segment; the current one stays open until the new one exists."""
        fd = self._open_segment(self._segment + 1)
        os.close(self._fd)
        with self._cond:
            self._fd = fd
            self._segment += 1
            self._sizes[self._segment] = 0

    def _open_segment(self, segment: int) -> int:
        path = self.directory / self._name(segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        _fsync_dir(self.directory)
        return fd

    # ---- reading back and checkpointing ----------------------------------------------------

    @property
    def checkpoint(self) -> Position:
        return self._checkpoint

    def backlog_bytes(self) -> int:
        """Bytes acknowledged (or being acknowledged) but not yet stored."""
        with self._cond:
            return self._backlog

    def wait_for_data(self, after: Position, timeout: float) -> bool:
        """Block until something durable lies beyond `after`, or the timeout passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self._durable > after or self._closed, timeout)

    def read(self, start: Position, max_bytes: int) -> list[Record]:
        """Durable records from `start` on, about `max_bytes` of them."""
        with self._cond:
            durable = self._durable
            sizes = dict(self._sizes)
        records: list[Record] = []
        total = 0
        position = start
        while total < max_bytes and position < durable:
            if position.segment not in sizes:
                later = [n for n in sizes if n > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            limit = (
                durable.offset if position.segment == durable.segment else sizes[position.segment]
            )
            chunk = list(self._read_segment(position, limit, max_bytes - total))
            records.extend(chunk)
            total += sum(len(r.payload) for r in chunk)
            if chunk:
                position = chunk[-1].end
            if position.segment != durable.segment and (not chunk or total < max_bytes):
                position = Position(position.segment + 1, 0)  # segment finished (or torn tail)
        return records

    def _read_segment(self, start: Position, limit: int, max_bytes: int) -> Iterator[Record]:
        path = self.directory / self._name(start.segment)
        total = 0
        with open(path, "rb") as f:
            f.seek(start.offset)
            offset = start.offset
            while offset + _HEADER.size <= limit and total < max_bytes:
                header = f.read(_HEADER.size)
                magic, length, crc = _HEADER.unpack(header)
                payload = f.read(length)
                if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                    log.warning(
                        "write-ahead log %s: torn or corrupt record at byte %d; the rest of this "
                        "segment was never acknowledged and is skipped",
                        path.name,
                        offset,
                    )
                    return
                offset += _HEADER.size + length
                total += length
                yield Record(payload, Position(start.segment, offset))

    def commit(self, position: Position) -> None:
        """Everything before `position` is in the store: persist that and free the space."""
        write_durably(
            self.directory / _CHECKPOINT, f"{position.segment} {position.offset}\n".encode()
        )
        with self._cond:
            freed = self._stored_bytes(self._checkpoint, position)
            self._backlog -= freed
            self._checkpoint = position
            done = [n for n in self._sizes if n < position.segment]
            for n in done:
                del self._sizes[n]
        for n in done:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / self._name(n)).unlink()

    def _stored_bytes(self, old: Position, new: Position) -> int:
        if new.segment == old.segment:
            return new.offset - old.offset
        freed = self._sizes.get(old.segment, 0) - old.offset
        freed += sum(self._sizes.get(n, 0) for n in range(old.segment + 1, new.segment))
        return freed + new.offset

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        os.close(self._fd)

    # ---- files -------------------------------------------------------------------------------

    def _recover(self, segment: int) -> int:
        """Cut a torn or corrupt tail (never acknowledged) off a segment a crash left; its size.

        Without this the unreadable bytes would count as backlog that no commit ever frees.
        """
        path = self.directory / self._name(segment)
        size = path.stat().st_size
        if segment < self._checkpoint.segment:
            return size
        valid = self._checkpoint.offset if segment == self._checkpoint.segment else 0
        for record in self._read_segment(Position(segment, valid), size, size + 1):
            valid = record.end.offset
        if valid < size:
            with open(path, "r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return valid

    @staticmethod
    def _name(segment: int) -> str:
        return f"{segment:012d}.wal"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.wal") if p.stem.isdigit())

    def _read_checkpoint(self) -> Position:
        path = self.directory / _CHECKPOINT
        if not path.exists():
            segments = self._segments()
            return Position(segments[0] if segments else 1, 0)
        segment, offset = path.read_text().split()
        return Position(int(segment), int(offset))
