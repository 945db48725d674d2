"""The ClickHouse server config parses and holds the settings the deployment relies on."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from driftline.store import Store

CLICKHOUSE = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
SYSTEM_LOGS = (
    "query_log", "part_log", "query_thread_log", "query_views_log", "trace_log", "text_log",
    "metric_log", "asynchronous_metric_log", "processors_profile_log", "crash_log",
)  # fmt: skip


def load(name: str) -> ET.Element:
    root = ET.parse(CLICKHOUSE / name).getroot()
    assert root.tag == "clickhouse"
    return root


def test_server_caps_memory_and_concurrency() -> None:
    root = load("config.d/driftline.xml")
    assert 0 < float(root.findtext("max_server_memory_usage_to_ram_ratio", "0")) <= 0.9
    for setting in ("max_concurrent_queries", "max_concurrent_insert_queries"):
        assert int(root.findtext(setting, "0")) > 0, setting


def test_every_system_log_expires_or_is_off() -> None:
    root = load("config.d/driftline.xml")
    for name in SYSTEM_LOGS:
        log = root.find(name)
        assert log is not None, name
        engine = log.findtext("engine", "")
        assert log.get("remove") == "1" or " TTL " in engine, name


def test_grafana_reads_only_and_driftline_writes() -> None:
    root = load("users.d/driftline.xml")
    grafana = root.find("users/grafana")
    writer = root.find("users/driftline")
    assert grafana is not None and writer is not None
    assert root.findtext(f"profiles/{grafana.findtext('profile')}/readonly") == "1"
    assert [q.text for q in grafana.findall("grants/query")] == ["GRANT SELECT ON driftline.*"]
    assert any("INSERT" in (q.text or "") for q in writer.findall("grants/query"))
    for user in (grafana, writer):
        password = user.find("password")
        assert password is not None and password.get("from_env"), "passwords come from .env"
    assert root.find("users/default").get("remove") == "1"  # type: ignore[union-attr]


def test_system_log_engines_are_valid_clickhouse(store: Store) -> None:
    root = load("config.d/driftline.xml")
    for name in SYSTEM_LOGS:
        engine = root.findtext(f"{name}/engine")
        if engine:
            store.command(
                f"CREATE TABLE log_{name} (event_date Date, event_time DateTime) {engine}"
            )
