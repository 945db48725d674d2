"""ClickHouse schema, migrations and the two storage backends (embedded chDB, server)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from driftline.store.base import Store, StoreError
from driftline.store.migrations import apply_retention, migrate

if TYPE_CHECKING:
    from driftline.store.embedded import EngineLimits

__all__ = ["Store", "StoreError", "apply_retention", "migrate", "open_store"]


def open_store(
    data_dir: Path | None = None,
    clickhouse_url: str | None = None,
    limits: EngineLimits | None = None,
) -> Store:
    """A server store when a URL is given, else the embedded store in `data_dir/clickhouse`
    (with `limits` on its memory, caches and merge threads; ClickHouse's own when None)."""
    if clickhouse_url:
        from driftline.store.server import ServerStore

        return ServerStore(clickhouse_url)
    if data_dir is None:
        raise StoreError("either a data folder or a ClickHouse URL is needed")
    from driftline.store.embedded import EmbeddedStore

    return EmbeddedStore(Path(data_dir) / "clickhouse", limits=limits)
