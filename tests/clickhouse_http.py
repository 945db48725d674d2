"""A stand-in for a remote ClickHouse server in tests: ClickHouse's HTTP interface over chDB.

No ClickHouse server runs on the machines the tests run on, so the server backend
(`store/server.py`, clickhouse-connect over HTTP) is tested against this: a small HTTP server
that speaks ClickHouse's HTTP interface as clickhouse-connect uses it and executes every
statement on a real ClickHouse engine, chDB, in its own process (chDB allows one engine per
process, and the test process may hold the embedded store's). It is not ClickHouse's server and
not part of driftline; a real server is tested when `DRIFTLINE_CLICKHOUSE_URL` is set.

What it speaks:

- `GET /ping`; queries by `POST` (SQL in the body, or in the `query` parameter with the body
  appended after a newline, as ClickHouse does; a body of known length or chunked, as
  clickhouse-connect streams inserts) or `GET ?query=`;
- `INSERT ... FORMAT <fmt>` with the data after the statement (any input format chDB reads:
  Native, Arrow, RowBinary, TSV...), run as `INSERT ... FROM INFILE`;
- `param_<name>` bound parameters (`{name:Type}`), `database`, `default_format`, `query_id`,
  and every other URL parameter as a ClickHouse setting for that request (an unknown one is
  ClickHouse's UNKNOWN_SETTING error);
- external data (`multipart/form-data`, `<name>_structure`/`_types`/`_format`) as temporary
  tables for the one query;
- request bodies with `Content-Encoding` lz4, zstd, gzip or deflate; responses compressed with
  the first of the client's `Accept-Encoding` it has when `enable_http_compression=1`;
- the user and password (Basic auth, `X-ClickHouse-User`/`-Key`, or `user`/`password`);
- errors as ClickHouse returns them: `Code: N. DB::Exception: ... (NAME) (version V)` with
  `X-ClickHouse-Exception-Code` and ClickHouse's HTTP status for the code; the
  `X-ClickHouse-Summary`, `-Query-Id`, `-Format`, `-Timezone` headers on success.

What it does not: sessions (`session_id` is accepted, but `SET` and temporary tables do not
outlive a request, and concurrent use of one session is not refused), `client_protocol_version`
(ignored, as a proxy that strips it; clickhouse-connect then reads Native without block info),
ClickHouse's own block compression (`compress`/`decompress`), readonly GET requests, progress
headers, streaming (every result is built in full before it is sent), TLS.

Run it alone: `python -m tests.clickhouse_http --path DIR [--port N] [--user U --password P]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# URL parameters that are the HTTP interface's own, not settings.
TRANSPORT = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "user",
    "password",
    "quota_key",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
}

# ClickHouse's HTTP status for an error code (HTTPHandler's exceptionCodeToHTTPStatus); 500 else.
STATUS = {
    **dict.fromkeys((516, 192, 193, 194), 401),  # AUTHENTICATION_FAILED, UNKNOWN_USER, ...
    **dict.fromkeys((497, 164), 403),  # ACCESS_DENIED, READONLY
    # CANNOT_PARSE_*, SYNTAX_ERROR, TYPE_MISMATCH, INCORRECT_DATA, BAD_ARGUMENTS, ...
    **dict.fromkeys((6, 25, 26, 27, 38, 41, 62, 53, 117, 36, 43, 42, 72), 400),
    # UNKNOWN_TABLE, _FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _DATABASE, _SETTING, _FORMAT, ...
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 73, 63), 404),
}

CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}

_INSERT_WITH_DATA = re.compile(
    rb"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*INSERT\b.*?\bFORMAT\s+(\w+)", re.S | re.I
)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_CODE = re.compile(r"^Code: (\d+)\.")


class ClickHouseError(Exception):
    """An error to answer as ClickHouse does: its code and its `Code: N. DB::Exception` text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Answer:
    body: bytes
    fmt: str
    summary: dict[str, str]


class Engine:
    """One chDB session; every request runs under a lock, from `USE` to its last setting."""

    def __init__(self, path: Path) -> None:
        from chdb import session as chdb_session

        self._session = chdb_session.Session(str(path))
        self._lock = threading.Lock()
        self._applied: dict[str, str] = {}  # the settings SET in the session now
        self._spool = Path(tempfile.mkdtemp(prefix="clickhouse-http-"))
        version, timezone = self._query("SELECT version(), timezone()", "TSV").strip().split("\t")
        self.version, self.timezone = version, timezone

    def execute(
        self,
        text: bytes,
        database: str,
        fmt: str,
        settings: dict[str, str],
        params: dict[str, str],
        external: dict[str, tuple[str, str, bytes]],
    ) -> Answer:
        with self._lock:
            temporary: list[str] = []
            try:
                self._query(f"USE {_identifier(database)}")
                self._settings(settings)
                for name, (columns, data_format, data) in external.items():
                    self._query(f"CREATE TEMPORARY TABLE {_identifier(name)} ({columns})")
                    temporary.append(name)
                    self._load(f"INSERT INTO {_identifier(name)}", data_format, data)
                insert = _INSERT_WITH_DATA.match(text)
                if insert:
                    statement = text[: insert.end()].decode()
                    data = re.sub(rb"^[ \t\r]*\n?", b"", text[insert.end() :], count=1)
                    result = self._insert(statement, insert.group(1).decode(), data)
                    return Answer(b"", fmt, _summary(result, written=True))
                sql = text.decode()
                found = _FORMAT_CLAUSE.search(sql)
                result = self._result(sql, fmt, params)
                return Answer(
                    bytes(result.bytes()), found.group(1) if found else fmt, _summary(result)
                )
            finally:
                for name in temporary:
                    with contextlib.suppress(ClickHouseError):
                        self._query(f"DROP TEMPORARY TABLE IF EXISTS {_identifier(name)}")

    def close(self) -> None:
        with self._lock:
            self._session.close()
        shutil.rmtree(self._spool, ignore_errors=True)

    def _settings(self, wanted: dict[str, str]) -> None:
        """The session's settings made this request's: its own, the others back to default.
        (Clients send the same few with every request; only what differs is SET.)"""
        dropped = [n for n in self._applied if n not in wanted]
        if dropped:
            self._query("SET " + ", ".join(f"{_identifier(n)} = DEFAULT" for n in dropped))
            for name in dropped:
                del self._applied[name]
        for name, value in wanted.items():
            if self._applied.get(name) != value:
                try:
                    self._query(f"SET {_identifier(name)} = {_quote(value)}")
                except ClickHouseError:  # unknown, or a bad value: the error is the answer
                    if self._applied.pop(name, None) is not None:
                        self._query(f"SET {_identifier(name)} = DEFAULT")
                    raise
                self._applied[name] = value

    def _insert(self, statement: str, data_format: str, data: bytes) -> Any:
        if not data.strip():
            return None  # ClickHouse inserts nothing for an empty body
        head = statement[: statement.rfind(data_format)].rstrip()
        head = re.sub(r"\bFORMAT$", "", head, flags=re.I).rstrip()
        settings = ""
        found = re.search(r"\sSETTINGS\s.*$", head, re.S | re.I)
        if found:
            head, settings = head[: found.start()], found.group(0)
        return self._load(head, data_format, data, settings)

    def _load(self, insert: str, data_format: str, data: bytes, settings: str = "") -> Any:
        """`insert` (INSERT INTO t [(columns)]) of `data` in `data_format`, with `settings` (a
        SETTINGS clause or nothing): the statement ClickHouse runs, with the data from a file."""
        spool = self._spool / f"{uuid.uuid4().hex}.data"
        spool.write_bytes(data)
        try:
            return self._result(
                f"{insert} FROM INFILE {_quote(str(spool))}{settings} FORMAT {data_format}"
            )
        finally:
            spool.unlink(missing_ok=True)

    def _query(self, sql: str, fmt: str = "Null") -> str:
        return bytes(self._result(sql, fmt).bytes()).decode()

    def _result(self, sql: str, fmt: str = "Null", params: dict[str, str] | None = None) -> Any:
        try:
            return self._session.query(sql, fmt, params=params or {})
        except Exception as exc:
            # chDB hands what is left of a query that failed mid-stream to the next one; a
            # throwaway query takes it (as the embedded store does).
            with contextlib.suppress(Exception):
                self._session.query("SELECT 1", "Arrow")
            message = str(exc).strip()
            found = _CODE.match(message)
            if not found:
                raise ClickHouseError(
                    1001, f"Code: 1001. DB::Exception: {message}. (STD_EXCEPTION)"
                ) from exc
            raise ClickHouseError(int(found.group(1)), message) from exc


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _summary(result: Any, written: bool = False) -> dict[str, str]:
    if result is None:
        return {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
    rows, size = int(result.rows_read()), int(result.bytes_read())
    out_rows = int(getattr(result, "rows_written", lambda: 0)() or 0)
    out_bytes = int(getattr(result, "bytes_written", lambda: 0)() or 0)
    return {
        "read_rows": str(0 if written else rows),
        "read_bytes": str(0 if written else size),
        "written_rows": str(out_rows or (rows if written else 0)),
        "written_bytes": str(out_bytes or (size if written else 0)),
        "total_rows_to_read": str(0 if written else rows),
        "result_rows": str(0 if written else rows),
        "result_bytes": str(0 if written else size),
        "elapsed_ns": str(int(float(result.elapsed()) * 1e9)),
    }


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    if encoding == "zstd":
        return bytes(_zstd().decompress(data))
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise ClickHouseError(
        36, f"Code: 36. DB::Exception: Unknown HTTP content encoding {encoding!r}. (BAD_ARGUMENTS)"
    )


def _compress(data: bytes, accepted: str) -> tuple[bytes, str | None]:
    for encoding in (e.split(";")[0].strip().lower() for e in accepted.split(",")):
        if encoding == "lz4":
            import lz4.frame

            return bytes(lz4.frame.compress(data)), "lz4"
        if encoding == "zstd":
            with contextlib.suppress(ImportError):
                return bytes(_zstd().compress(data)), "zstd"
        if encoding == "gzip":
            return gzip.compress(data), "gzip"
        if encoding == "deflate":
            return zlib.compress(data), "deflate"
    return data, None


def _zstd() -> Any:
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd
    return zstd


class Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go in separate writes: without this, each answer waits out the
        # client's delayed ACK (~40 ms).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        query_id = str(uuid.uuid4())
        try:
            url = urlsplit(self.path)
            body = self._body()
            if url.path.rstrip("/") == "/ping" or (
                self.command == "GET" and url.path == "/" and not url.query
            ):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            query_id = params.get("query_id") or query_id
            self._authenticate(params)
            body = _decompress(body, self.headers.get("Content-Encoding", ""))
            files: dict[str, bytes] = {}
            if self.headers.get_content_type() == "multipart/form-data":
                body = self._form(body, params, files)
            text = params.get("query", "").encode()
            if body:
                text = text + b"\n" + body if text else body
            if not text.strip():
                raise ClickHouseError(
                    62, "Code: 62. DB::Exception: Empty query: While executing HTTP. (SYNTAX_ERROR)"
                )
            external = {}
            for name, data in files.items():
                columns = params.pop(f"{name}_structure", "")
                types = params.pop(f"{name}_types", "")
                if not columns and types:
                    columns = ", ".join(
                        f"_{i} {t.strip()}" for i, t in enumerate(types.split(","), 1)
                    )
                external[name] = (columns, params.pop(f"{name}_format", "TabSeparated"), data)
            bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {
                k: v for k, v in params.items() if k not in TRANSPORT and not k.startswith("param_")
            }
            compression = settings.get("enable_http_compression") == "1"
            answer = self.server.engine.execute(
                text,
                params.get("database") or "default",
                params.get("default_format") or "TabSeparated",
                settings,
                bound,
                external,
            )
        except ClickHouseError as exc:
            message = str(exc)
            if "(version " not in message:
                message = f"{message} (version {self.server.engine.version})"
            self._send(
                STATUS.get(exc.code, 500),
                (message + "\n").encode(),
                {
                    "Content-Type": "text/plain; charset=UTF-8",
                    "X-ClickHouse-Exception-Code": str(exc.code),
                    "X-ClickHouse-Query-Id": query_id,
                },
            )
            return
        except Exception as exc:  # a bug here, answered as ClickHouse answers its own
            message = f"Code: 1001. DB::Exception: {type(exc).__name__}: {exc}. (STD_EXCEPTION)"
            self._send(
                500,
                (message + "\n").encode(),
                {
                    "Content-Type": "text/plain; charset=UTF-8",
                    "X-ClickHouse-Exception-Code": "1001",
                },
            )
            return
        payload, encoding = answer.body, None
        if compression and payload:
            payload, encoding = _compress(payload, self.headers.get("Accept-Encoding", ""))
        headers = {
            "Content-Type": CONTENT_TYPES.get(
                answer.fmt, "text/tab-separated-values; charset=UTF-8"
            ),
            "X-ClickHouse-Format": answer.fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Server-Display-Name": "clickhouse-http-stand-in",
            "X-ClickHouse-Summary": json.dumps(answer.summary),
        }
        if encoding:
            headers["Content-Encoding"] = encoding
        self._send(200, payload, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # streamed inserts
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(chunks)

    def _authenticate(self, params: dict[str, str]) -> None:
        user, password = params.pop("user", None), params.pop("password", None)
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user = self.headers.get("X-ClickHouse-User", user) or "default"
        password = self.headers.get("X-ClickHouse-Key", password) or ""
        if (user, password) != (self.server.user, self.server.password):
            raise ClickHouseError(
                516,
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is "
                "incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
            )

    def _form(self, body: bytes, params: dict[str, str], files: dict[str, bytes]) -> bytes:
        """Fields of a multipart request: `query` and `param_*` values, the rest files."""
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            if part.get_filename() is None and (name == "query" or name.startswith("param_")):
                params[name] = data.decode()
            else:
                files[name] = data
        return b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, path: Path, port: int, user: str, password: str) -> None:
        self.engine = Engine(path)
        self.user, self.password = user, password
        super().__init__(("127.0.0.1", port), Handler)


@dataclass
class Running:
    """A stand-in in its own process."""

    process: subprocess.Popen[bytes]
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Close its stdin (it stops serving and closes chDB), or end it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(path: Path, user: str = "driftline", password: str = "secret", port: int = 0) -> Running:
    """Start a stand-in over `path` on `port` (0: a free one); returns once it listens."""
    path.mkdir(parents=True, exist_ok=True)
    log = open(path.parent / f"{path.name}.log", "wb")  # noqa: SIM115  # the child's
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "tests.clickhouse_http", "--stop-with-stdin"]
    process = subprocess.Popen(
        [
            *command,
            "--path",
            str(path),
            "--user",
            user,
            "--password",
            password,
            "--port",
            str(port),
        ],
        stdin=subprocess.PIPE,  # closed when this process ends, however it ends: then it stops
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=root,
    )
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    found = re.match(r"listening on (\d+)", line)
    if not found:
        process.kill()
        process.wait()
        raise RuntimeError(f"the ClickHouse stand-in did not start: {line!r}")
    return Running(process, int(found.group(1)), user, password)


@contextlib.contextmanager
def running(path: Path, **kwargs: Any) -> Iterator[Running]:
    server = start(path, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, required=True, help="chDB's data folder")
    parser.add_argument("--port", type=int, default=0, help="0: a free one (printed)")
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument("--stop-with-stdin", action="store_true", help="stop at its end")
    args = parser.parse_args()
    server = StandIn(args.path, args.port, args.user, args.password)
    print(f"listening on {server.server_address[1]}", flush=True)
    if args.stop_with_stdin:

        def stop_at_end_of_input() -> None:
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=stop_at_end_of_input, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.engine.close()


if __name__ == "__main__":
    main()
