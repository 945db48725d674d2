"""What one write-ahead log record holds: the OTLP request, nested, and the project.

A record is the protobuf message `WalRecord { Request request = 1; string project = 2; }`
(`schemas/otlp_wal.proto`). Nesting costs two small headers, keeps every byte the client sent
inside `request` (so no field of theirs can pose as the project), and lets ClickHouse read
records with the `Protobuf` format.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_REQUEST_TAG = bytes([(1 << 3) | 2])  # field 1, length-delimited
_PROJECT_TAG = bytes([(2 << 3) | 2])  # field 2, length-delimited


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def pack(project: str, otlp: bytes) -> bytes:
    return b"".join(pack_parts(project, otlp))


def pack_parts(project: str, otlp: bytes) -> tuple[bytes, bytes, bytes]:
    """The record in three parts, the request's bytes as they are (not copied): what
    `WriteAheadLog.submit` takes."""
    name = project.encode()
    return _REQUEST_TAG + varint(len(otlp)), otlp, _PROJECT_TAG + varint(len(name)) + name


def unpack(payload: bytes) -> tuple[str, ExportTraceServiceRequest]:
    """The project and the request of a record (for tools and tests; the writer uses SQL)."""
    length, at = _read_varint(payload, 1)
    request = ExportTraceServiceRequest.FromString(payload[at : at + length])
    at += length
    length, at = _read_varint(payload, at + 1)
    return payload[at : at + length].decode(), request
