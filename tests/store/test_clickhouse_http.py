"""The stand-in for a ClickHouse server (tests/clickhouse_http.py) speaks the HTTP interface as
clickhouse-connect uses it: what the server backend's tests rest on."""

from __future__ import annotations

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData

from tests.clickhouse_http import Running


def test_the_client_connects_queries_inserts_and_reads_errors(
    clickhouse_stand_in: Running,
) -> None:
    server = clickhouse_stand_in
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username=server.user, password=server.password
    )
    try:
        assert client.server_version.count(".") >= 2
        client.command("CREATE DATABASE IF NOT EXISTS wire")
        client.command(
            "CREATE TABLE wire.t (id UInt32, name LowCardinality(String), tags Array(String), "
            "hash FixedString(2)) ENGINE = MergeTree ORDER BY id"
        )
        rows = [[1, "a", ["x"], b"ab"], [2, "b\t'c", [], b"cd"]]
        client.insert("wire.t", rows, column_names=["id", "name", "tags", "hash"])  # Native
        result = client.query(
            "SELECT id, name, tags FROM wire.t WHERE id >= {low:UInt32} ORDER BY id",
            parameters={"low": 1},
        )
        assert result.result_rows == [(1, "a", ["x"]), (2, "b\t'c", [])]
        assert result.summary["query_id"]
        external = ExternalData(file_name="ids", data=b"2\n3\n", structure="id UInt32")
        found = client.query(
            "SELECT name FROM wire.t WHERE id IN (SELECT id FROM ids)", external_data=external
        )
        assert found.result_rows == [("b\t'c",)]
        with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as raised:
            client.query("SELECT 1 FROM wire.nope")
        assert raised.value.code == 60
        with pytest.raises(DatabaseError, match="UNKNOWN_SETTING"):
            client.query("SELECT 1", settings={"no_such_setting": 1})
        # A setting holds for its request only.
        assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 3}) == 3
        assert client.command("SELECT getSetting('max_threads')") != 3
        client.command("DROP DATABASE wire")
    finally:
        client.close()


def test_answers_are_compressed_and_a_wrong_password_is_refused(
    clickhouse_stand_in: Running,
) -> None:
    server = clickhouse_stand_in
    url = f"http://127.0.0.1:{server.port}/"
    auth = (server.user, server.password)
    plain = httpx.post(url, content=b"SELECT 1", auth=auth)
    assert plain.status_code == 200 and plain.text == "1\n"
    assert plain.headers["x-clickhouse-format"] == "TabSeparated"
    compressed = httpx.post(
        url,
        params={"enable_http_compression": "1"},
        content=b"SELECT number FROM numbers(3)",
        headers={"Accept-Encoding": "gzip"},
        auth=auth,
    )
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.text == "0\n1\n2\n"  # httpx undoes gzip
    refused = httpx.post(url, content=b"SELECT 1", auth=(server.user, "wrong"))
    assert refused.status_code == 401
    assert refused.headers["x-clickhouse-exception-code"] == "516"
    assert refused.text.startswith("Code: 516. DB::Exception:")
    assert httpx.get(f"{url}ping").text == "Ok.\n"
