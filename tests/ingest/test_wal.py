"""The write-ahead log: what is acknowledged survives, in order, until it is committed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.ingest.wal import Position, WalClosed, WalFull, WriteAheadLog

HEADER = 12  # magic, length, crc32
BIG = 1 << 30


@pytest.fixture
def opened() -> Iterator[list[WriteAheadLog]]:
    """Logs a test opens are closed at the end even when it fails."""
    logs: list[WriteAheadLog] = []
    yield logs
    for wal in logs:
        if not wal._closed:
            wal.close()


def open_wal(
    opened: list[WriteAheadLog], path: Path, segment_bytes: int = BIG, budget: int = BIG
) -> WriteAheadLog:
    wal = WriteAheadLog(path, segment_bytes, budget)
    opened.append(wal)
    return wal


def payloads(n: int, size: int = 40) -> list[bytes]:
    return [f"record-{i:04d}-".encode().ljust(size, b"x") for i in range(n)]


def read_all(wal: WriteAheadLog, start: Position | None = None) -> list[bytes]:
    return [r.payload for r in wal.read(start or wal.checkpoint, BIG)]


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.wal"))


def test_append_read_commit_across_segment_rotation(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=150)
    records = payloads(10)  # 52 bytes each on disk: two per 150-byte segment
    for payload in records:
        wal.append(payload)
    assert len(segments(tmp_path)) >= 5

    assert read_all(wal) == records

    # Read in small steps, as the writer does, and commit each step.
    position = wal.checkpoint
    seen = []
    while True:
        batch = wal.read(position, 60)
        if not batch:
            break
        seen.extend(r.payload for r in batch)
        position = batch[-1].end
        wal.commit(position)
    assert seen == records
    assert wal.backlog_bytes() == 0
    assert wal.checkpoint == position


def test_backlog_counts_unstored_bytes(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=200)
    assert wal.backlog_bytes() == 0
    records = payloads(6, size=50)
    for payload in records:
        wal.append(payload)
    assert wal.backlog_bytes() == 6 * (HEADER + 50)

    read = wal.read(wal.checkpoint, BIG)
    wal.commit(read[1].end)
    assert wal.backlog_bytes() == 4 * (HEADER + 50)
    wal.commit(read[4].end)  # across a segment boundary
    assert wal.backlog_bytes() == 1 * (HEADER + 50)
    assert read_all(wal) == records[5:]
    wal.commit(read[5].end)
    assert wal.backlog_bytes() == 0
    assert read_all(wal) == []


def test_budget_refuses_records_until_space_is_committed(tmp_path: Path, opened: list) -> None:
    budget = 3 * (HEADER + 100)
    wal = open_wal(opened, tmp_path, budget=budget)
    for payload in payloads(3, size=100):
        wal.append(payload)
    with pytest.raises(WalFull, match="budget"):
        wal.submit(b"y" * 100)
    with pytest.raises(WalFull):
        wal.submit(b"y")  # even one byte more does not fit
    assert wal.backlog_bytes() == budget  # a refused record takes no space

    first = wal.read(wal.checkpoint, 1)[0]
    wal.commit(first.end)
    wal.append(b"z" * 100)  # room again
    assert wal.backlog_bytes() == budget
    assert read_all(wal)[-1] == b"z" * 100


def test_closed_log_takes_no_records(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path)
    wal.append(b"before")
    wal.close()
    with pytest.raises(WalClosed):
        wal.submit(b"after")


def test_reopen_replays_uncommitted_records_in_order(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=150)
    records = payloads(9)
    for payload in records:
        wal.append(payload)
    read = wal.read(wal.checkpoint, BIG)
    wal.commit(read[3].end)  # the first four are in the store
    wal.close()

    again = open_wal(opened, tmp_path, segment_bytes=150)
    assert read_all(again) == records[4:]
    assert again.backlog_bytes() == 5 * (HEADER + 40)

    # New records go after the replayed ones, and a third open still sees both, in order.
    extra = [b"after-reopen-1", b"after-reopen-2"]
    for payload in extra:
        again.append(payload)
    assert read_all(again) == records[4:] + extra
    again.close()
    third = open_wal(opened, tmp_path, segment_bytes=150)
    assert read_all(third) == records[4:] + extra


def test_reopen_after_everything_committed_replays_nothing(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=150)
    for payload in payloads(7):
        wal.append(payload)
    wal.commit(wal.read(wal.checkpoint, BIG)[-1].end)
    wal.close()

    again = open_wal(opened, tmp_path, segment_bytes=150)
    assert read_all(again) == []
    assert again.backlog_bytes() == 0
    again.append(b"fresh")
    assert read_all(again) == [b"fresh"]


def test_reopen_without_a_checkpoint_replays_everything(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=150)
    records = payloads(5)
    for payload in records:
        wal.append(payload)
    wal.close()
    assert not (tmp_path / "checkpoint").exists()

    again = open_wal(opened, tmp_path, segment_bytes=150)
    assert read_all(again) == records


def _last_segment(path: Path) -> Path:
    return sorted(p for p in path.glob("*.wal") if p.stat().st_size)[-1]


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_torn_tail_is_skipped_on_reopen(tmp_path: Path, opened: list, damage: str) -> None:
    wal = open_wal(opened, tmp_path)
    records = payloads(4)
    for payload in records:
        wal.append(payload)
    wal.close()
    segment = _last_segment(tmp_path)
    data = segment.read_bytes()
    assert len(data) == 4 * (HEADER + 40)
    if damage == "truncate":
        segment.write_bytes(data[:-7])  # the last record was cut short by a crash
    else:
        flipped = bytearray(data)
        flipped[-5] ^= 0xFF  # a byte of the last record's payload is wrong
        segment.write_bytes(bytes(flipped))

    again = open_wal(opened, tmp_path)
    survived = again.read(again.checkpoint, BIG)
    assert [r.payload for r in survived] == records[:3]

    # Once what survived is stored, nothing is left over: the torn bytes were never acknowledged.
    again.commit(survived[-1].end)
    assert again.backlog_bytes() == 0
    again.append(b"next")
    assert read_all(again) == [b"next"]
    again.close()
    assert read_all(open_wal(opened, tmp_path)) == [b"next"]


def test_truncated_header_is_skipped_on_reopen(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path)
    records = payloads(3)
    for payload in records:
        wal.append(payload)
    wal.close()
    segment = _last_segment(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[: 2 * (HEADER + 40) + 5])  # only part of the third header

    again = open_wal(opened, tmp_path)
    assert read_all(again) == records[:2]


def test_committed_segments_are_deleted(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=150)
    for payload in payloads(10):
        wal.append(payload)
    before = segments(tmp_path)
    assert len(before) >= 5
    read = wal.read(wal.checkpoint, BIG)

    wal.commit(read[5].end)  # records 0-5 fill the first three segments
    after = segments(tmp_path)
    assert before[0] not in after and before[1] not in after
    assert len(after) < len(before)

    wal.commit(read[-1].end)
    assert len(segments(tmp_path)) <= 1  # only the segment still being appended to
    wal.close()
    again = open_wal(opened, tmp_path, segment_bytes=150)
    assert read_all(again) == []


def test_concurrent_appends_are_all_durable_and_readable(tmp_path: Path, opened: list) -> None:
    wal = open_wal(opened, tmp_path, segment_bytes=4096)
    records = payloads(200)
    futures = [wal.submit(p) for p in records]
    for future in futures:
        future.result(timeout=10)
    assert read_all(wal) == records
    wal.close()
    assert read_all(open_wal(opened, tmp_path, segment_bytes=4096)) == records


def test_a_failed_fsync_is_undone_and_later_records_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append whose fsync fails is cut off; records acknowledged after it are all read back."""
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, budget_bytes=1 << 20)
    real = os.fdatasync
    calls = {"n": 0}

    def flaky(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", flaky)
    with pytest.raises(OSError):
        wal.append(b"x" * 3000)
    acked = [b"a" * 100, b"b" * 100, b"c" * 4000, b"d" * 100]
    for payload in acked:
        wal.append(payload)
    got = [r.payload for r in wal.read(wal.checkpoint, 1 << 20)]
    assert got == acked
    wal.close()
    reopened = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, budget_bytes=1 << 20)
    assert [r.payload for r in reopened.read(reopened.checkpoint, 1 << 20)] == acked
    reopened.close()
