"""What one write-ahead log record holds: an OTLP request with the project as field 15.

Appending a length-delimited field to serialized protobuf bytes is the same as setting that field,
so a record costs one concatenation, and ClickHouse reads records with `schemas/otlp_wal.proto`.
"""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_PROJECT_TAG = bytes([(15 << 3) | 2])  # field 15, wire type 2 (length-delimited)


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


def pack(project: str, otlp: bytes) -> bytes:
    name = project.encode()
    return otlp + _PROJECT_TAG + varint(len(name)) + name


def unpack(payload: bytes) -> tuple[str, ExportTraceServiceRequest]:
    """The project and the request of a record (for tools and tests; the writer uses SQL)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    project = ""
    for field in UnknownFieldSet(request):
        if field.field_number == 15:
            project = field.data.decode()
    request.DiscardUnknownFields()
    return project, request
