"""An export's files: every format but `label-studio` is JSON Lines, one row a line;
`label-studio` is one JSON array of tasks (a task a line), the file Label Studio imports. The
train rows go to `out`, the test rows to `<out stem>.test<suffix>`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from driftline.finetune.dataset.rows import Row


def encode_rows(fmt: str, rows: list[Row]) -> bytes:
    """The bytes of a file of rows: JSON Lines, or one JSON array (a task a line) for
    Label Studio."""
    if fmt == "label-studio":
        return ("[\n" + ",\n".join(_line(r) for r in rows) + "\n]\n" if rows else "[]\n").encode()
    return "".join(_line(r) + "\n" for r in rows).encode()


def held_out_path(out: Path) -> Path:
    """Where the test rows of an export to `out` go: `<stem>.test<suffix>`."""
    return out.with_name(f"{out.stem}.test{out.suffix}")


def write_splits(out: Path, train: bytes, test: bytes) -> None:
    """The train file at `out`, the test file beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(train)
    held_out_path(out).write_bytes(test)


def splits_sha256(train: bytes, test: bytes) -> str:
    """SHA-256 of the train bytes followed by the test bytes."""
    h = hashlib.sha256(train)
    h.update(test)
    return h.hexdigest()


def _line(row: Row) -> str:
    """One row as compact JSON, non-ASCII kept."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))
