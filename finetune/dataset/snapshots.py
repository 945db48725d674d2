"""Dataset snapshots: an export records what it wrote (filters, counts, the SHA-256 of the train
bytes followed by the test bytes) in `dataset_snapshots`, so `load_snapshot` can rebuild the
same rows later or say that the store has changed."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from driftline.finetune import tables
from driftline.finetune.dataset.files import encode_rows, splits_sha256, write_splits
from driftline.finetune.dataset.filters import ExportFilters, utc, utc_ms
from driftline.finetune.dataset.formats import FORMATS, build_rows, check_export
from driftline.finetune.dataset.rows import Row
from driftline.store import Store
from driftline.store.arrow import table_of


class SnapshotError(ValueError):
    """A snapshot is unknown, or its rows no longer rebuild to the recorded bytes."""


@dataclass(frozen=True)
class Snapshot:
    """One recorded export."""

    id: str
    project: str
    format: str
    filters: dict[str, Any]
    counts: dict[str, Any]
    sha256: str
    rows: int
    created_at: datetime


def record_snapshot(
    store: Store, fmt: str, filters: ExportFilters
) -> tuple[Snapshot, bytes, bytes]:
    """Build the rows and record a dataset_snapshots row; return it with the train and test
    file bytes."""
    check_export(fmt, filters)
    filters = filters.resolved()
    train, test, counts = build_rows(store, fmt, filters)
    train_bytes, test_bytes = encode_rows(fmt, train), encode_rows(fmt, test)
    snapshot = Snapshot(
        id=uuid.uuid4().hex,
        project=filters.project,
        format=fmt,
        filters=filters.to_json(),
        counts=counts,
        sha256=splits_sha256(train_bytes, test_bytes),
        rows=len(train) + len(test),
        created_at=utc_ms(datetime.now(UTC)),
    )
    tables.insert_snapshots(store, _snapshot_table(snapshot))
    return snapshot, train_bytes, test_bytes


def export_snapshot(store: Store, fmt: str, filters: ExportFilters, out: Path) -> Snapshot:
    """Write train rows to `out` and test rows to `<out stem>.test<suffix>`; record a
    dataset_snapshots row; return it."""
    snapshot, train, test = record_snapshot(store, fmt, filters)
    write_splits(out, train, test)
    return snapshot


def list_snapshots(store: Store, project: str, limit: int = 100) -> list[Snapshot]:
    """The project's snapshots, newest first."""
    return [_snapshot(row) for row in tables.snapshot_rows(store, project, limit)]


def get_snapshot(store: Store, snapshot_id: str, project: str) -> Snapshot:
    """A recorded snapshot; SnapshotError if the project has none by that id."""
    row = tables.snapshot_row(store, project, snapshot_id)
    if row is None:
        raise SnapshotError(f"no dataset snapshot {snapshot_id!r} in project {project!r}")
    return _snapshot(row)


def load_snapshot(
    store: Store, snapshot_id: str, project: str
) -> tuple[Snapshot, list[Row], list[Row]]:
    """Rebuild a snapshot's rows from the store with its recorded filters (cutoff included) and
    check the hash; raise SnapshotError if unknown or if the data changed."""
    snapshot = get_snapshot(store, snapshot_id, project)
    if snapshot.format not in FORMATS:
        raise SnapshotError(f"snapshot {snapshot_id!r} has unknown format {snapshot.format!r}")
    filters = ExportFilters.from_json(snapshot.filters)
    train, test, counts = build_rows(store, snapshot.format, filters)
    found = splits_sha256(encode_rows(snapshot.format, train), encode_rows(snapshot.format, test))
    if found != snapshot.sha256:
        raise SnapshotError(
            f"snapshot {snapshot_id!r} no longer rebuilds from the store: recorded sha256 "
            f"{snapshot.sha256} over {snapshot.rows} rows, rebuilt {found} over "
            f"{len(train) + len(test)} rows (recorded counts {snapshot.counts}, now {counts}); "
            "feedback or calls up to its cutoff changed since the export"
        )
    return snapshot, train, test


def _snapshot_table(s: Snapshot) -> pa.Table:
    """A snapshot as a one-row table of `tables.DATASET_SNAPSHOTS`."""
    return table_of(
        tables.DATASET_SNAPSHOTS,
        {
            "project_id": [s.project],
            "id": [s.id],
            "format": [s.format],
            "filters": [json.dumps(s.filters, sort_keys=True)],
            "counts": [json.dumps(s.counts, sort_keys=True)],
            "sha256": [s.sha256],
            "rows": [s.rows],
            "created_at": [s.created_at],
        },
    )


def _snapshot(row: dict[str, Any]) -> Snapshot:
    """A snapshot from its dataset_snapshots row."""
    return Snapshot(
        id=row["id"],
        project=row["project_id"],
        format=row["format"],
        filters=json.loads(row["filters"]),
        counts=json.loads(row["counts"]),
        sha256=row["sha256"],
        rows=int(row["rows"]),
        created_at=utc(row["created_at"]),
    )
