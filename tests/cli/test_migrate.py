"""`driftline migrate`: the versions a database lacks, applied once, on a data folder or (its
statements) on a cluster; a database newer than the code is refused."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from driftline.cli.commands import main
from driftline.cli.local import FolderLock
from driftline.store import Store, migrate, open_store
from driftline.store.cluster import ClusterLayout
from driftline.store.migrations import migrations, pending
from tests.store.test_old_data_folder import unpack


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["migrate", *args])
    return result.exit_code, result.output


def test_a_new_folder_gets_every_version_once(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    latest = migrations()[-1].version
    assert run("--data", data) == (
        0, f"{data}: applied {', '.join(str(m.version) for m in migrations())}; "
        f"now at version {latest}\n",
    )  # fmt: skip
    assert run("--data", data) == (0, f"{data}: up to date\n")
    with FolderLock(Path(data)):  # as a running `serve` holds it
        code, output = run("--data", data)
    assert code == 1 and "held by a running driftline" in output


def test_an_old_folder_gets_only_the_newer_versions(tmp_path: Path) -> None:
    data = unpack(tmp_path)  # made by the code of schema version 8
    code, printed = run("--data", str(data), "--print")
    assert code == 0
    newer = [m for m in migrations() if m.version > 8]
    assert [line for line in printed.splitlines() if line.startswith("-- ")] == [
        f"-- {m.version}: {m.name}" for m in newer
    ]
    assert run("--data", str(data))[1].endswith(f"now at version {newer[-1].version}\n")


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    store: Store = open_store(tmp_path / "data")
    migrate(store)
    store.command("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')")
    store.close()
    code, output = run("--data", str(tmp_path / "data"))
    assert code == 1 and "schema is at version 999, newer than this driftline knows" in output


def test_a_cluster_gets_its_layout_for_the_versions_it_lacks(tmp_path: Path) -> None:
    assert run("--data", str(tmp_path / "d"), "--cluster", "prod")[1].endswith(
        "--cluster needs --clickhouse-url (the embedded store is one node)\n"
    )
    store = open_store(unpack(tmp_path))  # at version 8, as a cluster set up then would be
    try:
        steps = pending(store, ClusterLayout("prod", "driftline"))
        assert [m.version for m, _ in steps] == [m.version for m in migrations() if m.version > 8]
        statements = [s for _, part in steps for s in part]
        for sql in statements:
            assert " ON CLUSTER 'prod'" in sql, sql
            assert store.query_arrow(f"EXPLAIN AST {sql}").num_rows >= 2, sql
        assert any("CREATE TABLE IF NOT EXISTS driftline.otel_metrics_local" in s
                   for s in statements)  # fmt: skip
    finally:
        store.close()
