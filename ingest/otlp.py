"""Decode and check OTLP/HTTP trace export requests (protobuf or JSON, optionally gzipped), and
what every OTLP signal shares: media types, decompression, parsing, responses."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from driftline.ingest import genai

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_TIME = 2**63 - 1  # ClickHouse DateTime64(9) ends in 2262
_STRUCTURED = ("array_value", "kvlist_value")
_BODY_KEYS = frozenset(genai.BODY_KEYS)
_MAX_GZIP_MEMBERS = 64  # each member restarts the inflater; a bound keeps the work linear
_INFLATE_STEP = 1024 * 1024  # inflated at a time, each step counted against the byte budget


class BadRequest(ValueError):
    """The request body cannot be read as an OTLP trace export."""


class TooLarge(ValueError):
    """The body, once decompressed, passes the size limit."""


class UnsupportedMedia(ValueError):
    """A content type or encoding the endpoint does not speak."""


@dataclass
class Decoded:
    """What the route keeps of a request until the log has it: not the parsed message, which
    is several times the size of its bytes."""

    wire: bytes  # protobuf bytes of the accepted spans, as they go to the log
    accepted: int
    rejected: dict[str, int]
    message: str


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header; 415 unless it is OTLP's."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    if bare not in (PROTOBUF, JSON):
        raise UnsupportedMedia(
            f"content type {content_type!r} is not supported; send {PROTOBUF} or {JSON}"
        )
    return bare


def decompress(
    body: bytes, encoding: str | None, limit: int, take: Callable[[int], None] | None = None
) -> bytes:
    """The body inflated, at most `limit` bytes; `take(n)` is told of every `n` bytes inflated
    before more are (the server's byte budget: it raises to stop)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise UnsupportedMedia(f"content encoding {encoding!r} is not supported; use gzip")
    pieces: list[bytes] = []
    size = 0
    try:
        # a gzip stream may be several members back to back (RFC 1952): read them all
        for _ in range(_MAX_GZIP_MEMBERS):
            inflater = zlib.decompressobj(wbits=31)
            while not inflater.eof and size <= limit:
                piece = inflater.decompress(body, min(_INFLATE_STEP, limit + 1 - size))
                body = inflater.unconsumed_tail
                if take is not None:
                    take(len(piece))
                pieces.append(piece)
                size += len(piece)
                if not piece and not body:
                    break  # the input ended inside the member: truncated
            if not (inflater.eof and inflater.unused_data) or size > limit:
                break
            body = inflater.unused_data
        else:
            raise BadRequest(f"gzip body has more than {_MAX_GZIP_MEMBERS} members")
    except zlib.error as exc:
        raise BadRequest(f"gzip body is corrupt: {exc}") from exc
    if size > limit:
        raise TooLarge(f"decompressed body passes the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest("gzip body is truncated")
    return b"".join(pieces)


def parse(data: bytes, media: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    parse_into(request, data, media, "trace", _ids_to_base64)
    return request


def parse_into(
    request: Message,
    data: bytes,
    media: str,
    signal: str,
    prepare: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Read an OTLP export request of `signal` (protobuf, or JSON made ready by `prepare`)."""
    name = type(request).__name__
    if media == PROTOBUF:
        try:
            request.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"body is not a protobuf {name}: {exc}") from exc
        return
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequest(f"JSON body must be an object ({name})")
    try:
        json_format.ParseDict(prepare(document), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(f"JSON body is not an OTLP {signal} export: {exc}") from exc


def _ids_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64."""
    for i, rs in enumerate(json_list(document, "resourceSpans", "")):
        for j, ss in enumerate(json_list(rs, "scopeSpans", f"resourceSpans[{i}]")):
            for k, span in enumerate(json_list(ss, "spans", f"resourceSpans[{i}].scopeSpans[{j}]")):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                if not isinstance(span, dict):
                    raise BadRequest(f"{where} must be an object")
                for key in ("traceId", "spanId", "parentSpanId"):
                    hex_to_base64(span, key, where)
                for n, link in enumerate(json_list(span, "links", where)):
                    if isinstance(link, dict):
                        hex_to_base64(link, "traceId", f"{where}.links[{n}]")
                        hex_to_base64(link, "spanId", f"{where}.links[{n}]")
    return document


def hex_to_base64(holder: dict[str, Any], key: str, where: str) -> None:
    """An id written as hex (OTLP/JSON) rewritten as base64 (protobuf's JSON mapping)."""
    value = holder.get(key)
    if isinstance(value, str) and value:
        try:
            holder[key] = base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError as exc:
            raise BadRequest(f"{where}.{key} is not hex: {value[:40]!r}") from exc


def json_list(holder: Any, key: str, where: str) -> list[Any]:
    """`holder[key]`, a list (or none), in a JSON body; BadRequest naming `where` otherwise."""
    if not isinstance(holder, dict):
        raise BadRequest(f"{where or 'body'} must be an object")
    value = holder.get(key, [])
    if not isinstance(value, list):
        raise BadRequest(f"{(where + '.') if where else ''}{key} must be a list")
    return value


def check_spans(request: ExportTraceServiceRequest) -> tuple[int, dict[str, int], str]:
    """Drop spans that cannot be stored; return (accepted, rejected by reason, message)."""
    accepted = 0
    rejected: dict[str, int] = {}
    first_problem = ""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            problems = [(i, _problem(span)) for i, span in enumerate(spans)]
            bad = [(i, reason) for i, reason in problems if reason]
            for i, reason in bad:
                rejected[reason] = rejected.get(reason, 0) + 1
                if not first_problem:
                    first_problem = f"span {spans[i].name!r}: {reason.replace('_', ' ')}"
            for i, _ in reversed(bad):
                del spans[i]
            accepted += len(spans)
    message = ""
    if rejected:
        message = f"{sum(rejected.values())} span(s) rejected; first: {first_problem}"
    return accepted, rejected, message


_BODY_KEY_BYTES = [k.encode() for k in genai.BODY_KEYS]
_STRUCTURED_TAGS = (0x2A, 0x32)  # AnyValue fields 5 (array_value) and 6 (kvlist_value)


def _may_hold_structured_body(data: bytes) -> bool:
    """Whether a body key in the raw protobuf holds an array or map value.

    Walking every attribute in Python costs ~11 µs a span; `bytes.find` over the body finds the
    rare request that needs it. Encoders write KeyValue's key (field 1) before its value
    (field 2, tag 0x12), whose AnyValue opens with the tag of the field that is set.
    """
    for key in _BODY_KEY_BYTES:
        at = data.find(key)
        while at >= 0:
            at += len(key)
            if data[at : at + 1] == b"\x12":
                at += 1
                while at < len(data) and data[at] & 0x80:  # the value's length, a varint
                    at += 1
                if at + 1 < len(data) and data[at + 1] in _STRUCTURED_TAGS:
                    return True
            at = data.find(key, at)
    return False


def structured_bodies_to_json(request: ExportTraceServiceRequest) -> bool:
    """Message bodies sent as structured values (arrays, maps) become JSON text.

    The conventions let `gen_ai.input.messages` and friends be structured; the log's decoder
    reads attribute values two levels deep, so deeper bodies are written out here. True when
    anything changed.
    """
    changed = False
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                changed |= _to_json(span.attributes)
                for event in span.events:
                    changed |= _to_json(event.attributes)
    return changed


def _to_json(attributes: Iterable[KeyValue]) -> bool:
    changed = False
    for kv in attributes:
        if kv.key in _BODY_KEYS and kv.value.WhichOneof("value") in _STRUCTURED:
            kv.value.string_value = orjson.dumps(plain(kv.value)).decode()
            changed = True
    return changed


def text_map(attributes: Iterable[KeyValue]) -> dict[str, str]:
    """Attributes as text: strings as they are, other values as JSON."""
    out = {}
    for kv in attributes:
        value = plain(kv.value)
        out[kv.key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return out


def plain(value: AnyValue) -> Any:
    """An attribute value as plain Python (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


def _problem(span: Span) -> str:
    """Why a span cannot be stored, or ''."""
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE:
        return "invalid_trace_id"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN:
        return "invalid_span_id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "invalid_parent_span_id"
    if not 0 < span.start_time_unix_nano <= _MAX_TIME:
        return "invalid_start_time"
    return ""


def decode(
    body: bytes,
    content_type: str | None,
    encoding: str | None,
    limit: int,
    take: Callable[[int], None] | None = None,
) -> Decoded:
    media = media_type(content_type)
    data = decompress(body, encoding, limit, take)
    request = parse(data, media)
    accepted, rejected, message = check_spans(request)
    rewritten = (media == JSON or _may_hold_structured_body(data)) and (
        structured_bodies_to_json(request)
    )
    keep = media == PROTOBUF and not rejected and not rewritten
    wire = data if keep else request.SerializeToString()
    return Decoded(wire, accepted, rejected, message)


def response(decoded: Decoded | None, media: str) -> bytes:
    """The OTLP export response, with partial success when spans were rejected."""
    reply = ExportTraceServiceResponse()
    if decoded is not None and decoded.rejected:
        reply.partial_success.rejected_spans = sum(decoded.rejected.values())
        reply.partial_success.error_message = decoded.message
    return encode(reply, media)


# google.rpc.Code for each HTTP status the ingest endpoint answers with.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 503: 14}


def encode(reply: Message, media: str) -> bytes:
    """An OTLP response message in the request's encoding."""
    if media == JSON:
        return json_format.MessageToJson(reply, indent=None).encode()
    return reply.SerializeToString()


def status_body(http_status: int, message: str, media: str) -> bytes:
    """A google.rpc.Status error body in the request's encoding, as OTLP/HTTP asks."""
    code = _GRPC_CODES.get(http_status, 2)  # 2 = UNKNOWN
    if media == PROTOBUF:
        return Status(code=code, message=message).SerializeToString()
    return orjson.dumps({"code": code, "message": message})
