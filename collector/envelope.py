"""What one write-ahead log record holds: the project and the OTLP request bytes."""

from __future__ import annotations

import struct

_PROJECT_LEN = struct.Struct("<H")


def pack(project: str, otlp: bytes) -> bytes:
    name = project.encode()
    return _PROJECT_LEN.pack(len(name)) + name + otlp


def unpack(payload: bytes) -> tuple[str, bytes]:
    (length,) = _PROJECT_LEN.unpack_from(payload)
    start = _PROJECT_LEN.size
    return payload[start : start + length].decode(), payload[start + length :]
