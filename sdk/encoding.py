"""OTLP protobuf encoding of finished spans, written straight to bytes.

The same wire format as `opentelemetry.exporter.otlp.proto.common`'s `encode_spans` (a test
parses both and compares), without building a protobuf object per field: the worker thread
spends a fraction of the time holding the GIL the app's threads need. Content attributes are
masked while they are written.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import SpanContext

from driftline.sdk.attributes import is_content

Mask = Callable[[str], str]

_LEN, _I64, _VARINT = 2, 1, 0
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")


def encode_request(spans: Sequence[ReadableSpan], mask: Mask | None = None) -> bytes:
    """An ExportTraceServiceRequest holding `spans`, grouped by resource and scope."""
    # Grouped by identity: hashing a Resource serialises its attributes, for every span.
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[ReadableSpan]]]]] = {}
    for span in spans:
        _, scopes = groups.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(span)
    out = bytearray()
    for resource, scopes in groups.values():
        resource_spans = bytearray()
        encoded_resource = bytearray()
        _attributes(encoded_resource, 1, resource.attributes, None)
        _message(resource_spans, 1, encoded_resource)
        for scope, scope_spans in scopes.values():
            encoded = bytearray()
            _message(encoded, 1, _scope(scope) if scope is not None else b"")
            for span in scope_spans:
                _message(encoded, 2, _span(span, mask))
            if scope is not None and scope.schema_url:
                _string(encoded, 3, scope.schema_url)
            _message(resource_spans, 2, encoded)
        if resource.schema_url:
            _string(resource_spans, 3, resource.schema_url)
        _message(out, 1, resource_spans)
    return bytes(out)


def _span(span: ReadableSpan, mask: Mask | None) -> bytearray:
    out = bytearray()
    context = span.context
    assert context is not None
    out += b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
    out += b"\x12\x08" + context.span_id.to_bytes(8, "big")
    if context.trace_state:
        _string(out, 3, ",".join(f"{k}={v}" for k, v in context.trace_state.items()))
    if span.parent is not None:
        out += b"\x22\x08" + span.parent.span_id.to_bytes(8, "big")
    _string(out, 5, span.name)
    out += b"\x30" + bytes((_KIND[span.kind],))
    out += b"\x39" + _FIXED64.pack(span.start_time or 0)
    out += b"\x41" + _FIXED64.pack(span.end_time or 0)
    _attributes(out, 9, span.attributes, mask)
    _count(out, 10, span.dropped_attributes)
    for event in span.events:
        encoded = bytearray(b"\x09" + _FIXED64.pack(event.timestamp))
        _string(encoded, 2, event.name)
        _attributes(encoded, 3, event.attributes, mask)
        _count(encoded, 4, event.dropped_attributes)
        _message(out, 11, encoded)
    _count(out, 12, span.dropped_events)
    for link in span.links:
        _message(out, 13, _link(link))
    _count(out, 14, span.dropped_links)
    status = bytearray()
    if span.status.description:
        _string(status, 2, span.status.description)
    if span.status.status_code.value:
        status += b"\x18" + bytes((span.status.status_code.value,))
    _message(out, 15, status)
    out += b"\x85\x01" + _FIXED32.pack(_flags(span.parent))
    return out


def _link(link: Link) -> bytearray:
    out = bytearray(b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"))
    out += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
    _attributes(out, 4, link.attributes, None)
    _count(out, 5, link.dropped_attributes)
    out += b"\x35" + _FIXED32.pack(_flags(link.context))
    return out


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)


def _scope(scope: Any) -> bytearray:
    out = bytearray()
    _string(out, 1, scope.name)
    if scope.version:
        _string(out, 2, scope.version)
    _attributes(out, 3, scope.attributes, None)
    return out


def _attributes(
    out: bytearray, field: int, attributes: Mapping[str, Any] | None, mask: Mask | None
) -> None:
    if not attributes:
        return
    tag = _tag(field)
    for key, value in attributes.items():
        if type(value) is str:
            if mask is not None and is_content(key):
                value = _masked(mask, value)
            raw = value.encode("utf-8", "surrogatepass")
            any_value = b"\x0a" + _length(len(raw)) + raw
        else:
            any_value = bytes(_any(value))
        kv = _key(key) + b"\x12" + _length(len(any_value)) + any_value
        out += tag + _length(len(kv)) + kv


def _key(key: str) -> bytes:
    """KeyValue's key field, cached: the same few keys come in every span."""
    encoded = _KEYS.get(key)
    if encoded is None:
        raw = key.encode("utf-8", "surrogatepass")
        encoded = b"\x0a" + _length(len(raw)) + raw
        if len(_KEYS) < 4096:
            _KEYS[key] = encoded
    return encoded


def _masked(mask: Mask, value: str) -> str:
    try:
        return mask(value)
    except Exception as exc:  # never send what the mask was meant to hide
        return f"<mask failed: {type(exc).__name__}>"


def _any(value: Any) -> bytearray:
    out = bytearray()
    kind = type(value)
    if kind is str:
        _string(out, 1, value)
    elif kind is bool:
        out += b"\x10\x01" if value else b"\x10\x00"
    elif kind is int:
        out += b"\x18"
        _varint(out, value & 0xFFFFFFFFFFFFFFFF)
    elif kind is float:
        out += b"\x21" + _DOUBLE.pack(value)
    elif kind is bytes:
        _bytes(out, 7, value)
    elif isinstance(value, Sequence):
        values = bytearray()
        for item in value:
            _message(values, 1, _any(item))
        _message(out, 5, values)
    else:
        _string(out, 1, str(value))
    return out


def _count(out: bytearray, field: int, value: int) -> None:
    if value:
        _varint(out, field << 3 | _VARINT)
        _varint(out, value)


def _string(out: bytearray, field: int, value: str) -> None:
    _bytes(out, field, value.encode("utf-8", "surrogatepass"))


def _message(out: bytearray, field: int, body: bytes | bytearray) -> None:
    _bytes(out, field, body)


def _bytes(out: bytearray, field: int, body: bytes | bytearray) -> None:
    out += _tag(field) + _length(len(body))
    out += body


def _tag(field: int) -> bytes:
    return _TAGS[field]


def _length(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    _varint(out, value)
    return bytes(out)


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


_SMALL = [bytes((n,)) for n in range(0x80)]
_TAGS = {field: _length(field << 3 | _LEN) for field in range(1, 16)}
_KEYS: dict[str, bytes] = {}
