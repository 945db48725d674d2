"""Property tests: decoding, span checks, mapping and the ingest endpoint on hostile input."""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from driftline.ingest import envelope, genai, otlp
from driftline.ingest.mapping import SpanDecoder
from driftline.ingest.pricing import PriceTable
from driftline.store import Store
from tests import factory

LIMIT = 1 << 20
EXPECTED_ERRORS = (otlp.BadRequest, otlp.TooLarge, otlp.UnsupportedMedia)
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
NOW = time.time_ns()
YEAR = 365 * 86_400 * 10**9

CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            otlp.PROTOBUF,
            otlp.JSON,
            "application/json; charset=utf-8",
            "Application/X-Protobuf",
            "application/protobuf",
            "text/plain",
            "",
            None,
        ]
    ),
    st.text(max_size=30),
)
ENCODINGS = st.one_of(
    st.sampled_from([None, "identity", "gzip", "GZIP", " gzip ", "br", "deflate", ""]),
    st.text(max_size=10),
)

# --- building blocks -------------------------------------------------------------------------


def decode_or_refuse(body: bytes, content_type: str | None, encoding: str | None, limit: int):
    """otlp.decode, which may refuse only with its own three errors; check what it accepts."""
    try:
        decoded = otlp.decode(body, content_type, encoding, limit)
    except EXPECTED_ERRORS:
        return None
    assert isinstance(decoded, otlp.Decoded)
    back = ExportTraceServiceRequest.FromString(decoded.wire)  # what goes to the log parses
    # whatever the client's bytes hold, the log record's project is the one we set
    assert envelope.unpack(envelope.pack("alpha", decoded.wire))[0] == "alpha"
    spans = [s for rs in back.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == decoded.accepted
    assert all(valid_ids(s) for s in spans)
    assert all(n > 0 for n in decoded.rejected.values())
    assert bool(decoded.message) == bool(decoded.rejected)
    media = otlp.media_type(content_type)
    reply = otlp.response(decoded, media)
    if media == otlp.PROTOBUF:
        parsed = ExportTraceServiceResponse.FromString(reply)
    else:
        parsed = json_format.Parse(reply, ExportTraceServiceResponse())
    assert parsed.partial_success.rejected_spans == sum(decoded.rejected.values())
    return decoded


def valid_ids(span: Span) -> bool:
    return problem(span) == ""


def problem(span: Span) -> str:
    """The OTLP rule, written out independently of the collector's code."""
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "invalid_trace_id"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "invalid_span_id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "invalid_parent_span_id"
    if span.start_time_unix_nano == 0 or span.start_time_unix_nano >= 2**63:
        return "invalid_start_time"  # unset, or past what DateTime64(9) holds (2262)
    return ""


def all_spans(request: ExportTraceServiceRequest) -> list[Span]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as an SDK writes it: ids in hex, enums as integers."""
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return json.dumps(doc).encode()


def nest(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


texts = st.text(max_size=24)
scalar_values = st.one_of(
    texts.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=16).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)


def _containers(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
    return st.one_of(
        st.lists(children, max_size=4).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.tuples(texts, children), max_size=4).map(
            lambda kv: AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kv])
            )
        ),
    )


any_values = st.one_of(
    st.recursive(scalar_values, _containers, max_leaves=8),
    st.integers(0, 30).map(nest),  # nested arrays, well inside protobuf's depth limit
)
attr_lists = st.lists(st.builds(KeyValue, key=texts, value=any_values), max_size=4)

trace_ids = st.one_of(
    st.binary(min_size=16, max_size=16), st.binary(max_size=20), st.just(bytes(16))
)
span_ids = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=12), st.just(bytes(8)))
parent_ids = st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=12))
times = st.one_of(
    st.sampled_from([0, 1, 2**63 - 1, 2**63, MAX_U64]),
    st.integers(NOW - YEAR, NOW + YEAR),
)


@st.composite
def random_spans(draw: st.DrawFn, attrs: st.SearchStrategy[list[KeyValue]] = attr_lists) -> Span:
    return Span(
        trace_id=draw(trace_ids),
        span_id=draw(span_ids),
        parent_span_id=draw(parent_ids),
        name=draw(texts),
        kind=draw(st.integers(0, 5)),
        start_time_unix_nano=draw(times),
        end_time_unix_nano=draw(times),
        attributes=draw(attrs),
        events=draw(
            st.lists(
                st.builds(Span.Event, name=texts, time_unix_nano=times, attributes=attr_lists),
                max_size=2,
            )
        ),
        links=draw(
            st.lists(
                st.builds(Span.Link, trace_id=trace_ids, span_id=span_ids, attributes=attr_lists),
                max_size=2,
            )
        ),
        status=Status(code=draw(st.integers(0, 2)), message=draw(texts)),
    )


@st.composite
def random_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    groups = draw(
        st.lists(
            st.tuples(
                attr_lists,
                st.lists(st.tuples(texts, st.lists(random_spans(), max_size=3)), max_size=2),
            ),
            max_size=2,
        )
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=resource),
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name=name), spans=spans)
                    for name, spans in scopes
                ],
            )
            for resource, scopes in groups
        ]
    )


OTLP_KEYS = [
    "resourceSpans", "scopeSpans", "spans", "resource", "scope", "attributes", "key", "value",
    "stringValue", "intValue", "doubleValue", "boolValue", "bytesValue", "arrayValue",
    "kvlistValue", "values", "traceId", "spanId", "parentSpanId", "name", "kind",
    "startTimeUnixNano", "endTimeUnixNano", "events", "links", "status", "code", "message",
    "timeUnixNano", "droppedAttributesCount", "flags", "traceState", "schemaUrl",
]  # fmt: skip
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["", "00" * 16, "00" * 8, "0af7651916cd43dd8448eb211c80319c", "zz", "NaN"]),
)
json_docs = st.recursive(
    json_scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(OTLP_KEYS), texts), c, max_size=5),
    ),
    max_leaves=30,
)


@st.composite
def otlp_shaped_json(draw: st.DrawFn) -> Any:
    """Documents that get past the first checks: the OTLP skeleton, with anything inside."""
    span = draw(st.dictionaries(st.sampled_from(OTLP_KEYS), json_docs, max_size=8))
    if draw(st.booleans()):
        span["traceId"] = draw(st.binary(max_size=17)).hex()
        span["spanId"] = draw(st.binary(max_size=9)).hex()
    spans = [span, *draw(st.lists(json_docs, max_size=2))]
    scope = {"spans": spans, **draw(st.dictionaries(st.sampled_from(OTLP_KEYS), json_docs))}
    resource = {
        "scopeSpans": [scope],
        **draw(st.dictionaries(st.sampled_from(OTLP_KEYS), json_docs)),
    }
    return {"resourceSpans": [resource]}


@st.composite
def gzip_bodies(draw: st.DrawFn) -> bytes:
    payload = draw(
        st.one_of(
            st.binary(max_size=300),
            random_requests().map(lambda r: r.SerializeToString()),
            json_docs.map(lambda d: json.dumps(d).encode()),
            st.integers(0, 3 * LIMIT).map(lambda n: b"\0" * n),  # a small zip bomb
        )
    )
    body = gzip.compress(payload)
    how = draw(st.sampled_from(["whole", "truncated", "flipped", "trailing", "two members"]))
    if how == "truncated":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif how == "flipped":
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    elif how == "trailing":
        body += draw(st.binary(min_size=1, max_size=20))
    elif how == "two members":
        body += gzip.compress(draw(st.binary(max_size=50)))
    return body


@st.composite
def mutated_protobuf(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(random_requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# --- (a) decode refuses junk with its own errors only ----------------------------------------


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), content_type=CONTENT_TYPES, encoding=ENCODINGS)
def test_decode_arbitrary_bytes(
    body: bytes, content_type: str | None, encoding: str | None
) -> None:
    decode_or_refuse(body, content_type, encoding, LIMIT)


@settings(max_examples=100, deadline=None)
@given(body=mutated_protobuf(), content_type=st.sampled_from([otlp.PROTOBUF, otlp.JSON]))
def test_decode_mutated_protobuf(body: bytes, content_type: str) -> None:
    decode_or_refuse(body, content_type, None, LIMIT)


@settings(max_examples=150, deadline=None)
@given(
    doc=st.one_of(json_docs, otlp_shaped_json()),
    content_type=st.sampled_from([otlp.JSON, otlp.PROTOBUF]),
    gzipped=st.booleans(),
)
def test_decode_json_documents(doc: Any, content_type: str, gzipped: bool) -> None:
    body = json.dumps(doc).encode()
    decode_or_refuse(
        gzip.compress(body) if gzipped else body, content_type, "gzip" if gzipped else None, LIMIT
    )


@settings(max_examples=150, deadline=None)
@given(
    body=gzip_bodies(),
    content_type=st.sampled_from([otlp.JSON, otlp.PROTOBUF]),
    limit=st.one_of(st.just(LIMIT), st.integers(0, 4096)),
)
def test_decode_gzip(body: bytes, content_type: str, limit: int) -> None:
    decoded = decode_or_refuse(body, content_type, "gzip", limit)
    if decoded is not None and content_type == otlp.PROTOBUF:
        assert len(decoded.wire) <= limit


def test_decode_refuses_with_the_matching_error() -> None:
    wire = factory.request([factory.span(factory.genai_attrs())]).SerializeToString()
    cases = [
        ((wire, "text/plain", None, LIMIT), otlp.UnsupportedMedia),
        ((wire, otlp.PROTOBUF, "br", LIMIT), otlp.UnsupportedMedia),
        ((gzip.compress(wire), otlp.PROTOBUF, "gzip", len(wire) - 1), otlp.TooLarge),
        ((gzip.compress(wire)[:-9], otlp.PROTOBUF, "gzip", LIMIT), otlp.BadRequest),
        ((b"\xff\xff", otlp.PROTOBUF, None, LIMIT), otlp.BadRequest),
        ((b"[]", otlp.JSON, None, LIMIT), otlp.BadRequest),
        ((b'{"resourceSpans": 3}', otlp.JSON, None, LIMIT), otlp.BadRequest),
    ]
    for args, error in cases:
        try:
            otlp.decode(*args)
        except error:
            continue
        raise AssertionError(f"{args[1:]} did not raise {error.__name__}")
    ok = otlp.decode(gzip.compress(wire), otlp.PROTOBUF, "gzip", len(wire))
    assert ok.accepted == 1 and ok.wire == wire


def test_gzip_members_are_all_read_and_trailing_junk_refused() -> None:
    """A gzip stream may hold several members (`cat a.gz b.gz`); each one's spans count."""
    first = factory.request([factory.span(factory.genai_attrs()) for _ in range(2)])
    second = factory.request([factory.span(factory.genai_attrs()) for _ in range(3)])
    body = gzip.compress(first.SerializeToString()) + gzip.compress(second.SerializeToString())
    decoded = otlp.decode(body, otlp.PROTOBUF, "gzip", LIMIT)
    assert decoded.accepted == 5
    size = len(first.SerializeToString()) + len(second.SerializeToString())
    try:
        otlp.decode(body, otlp.PROTOBUF, "gzip", size - 1)
    except otlp.TooLarge:
        pass
    else:
        raise AssertionError("the second member's bytes count toward the limit")
    for junk in (b"\0" * 8, b"garbage"):
        try:
            otlp.decode(
                gzip.compress(first.SerializeToString()) + junk, otlp.PROTOBUF, "gzip", LIMIT
            )
        except otlp.BadRequest:
            continue
        raise AssertionError(f"trailing {junk!r} after the gzip stream was accepted")


# --- (b) valid requests round-trip -----------------------------------------------------------


def unknown_field(number: int, text: bytes) -> bytes:
    """A length-delimited field the OTLP schema does not have."""
    return bytes([(number << 3) | 2, len(text)]) + text


@settings(max_examples=100, deadline=None)
@given(
    request=random_requests(),
    as_json=st.booleans(),
    gzipped=st.booleans(),
    extra=st.one_of(
        st.just(b""),
        st.tuples(st.integers(2, 15), st.binary(max_size=20)).map(lambda f: unknown_field(*f)),
    ),
)
def test_valid_requests_round_trip(
    request: ExportTraceServiceRequest, as_json: bool, gzipped: bool, extra: bytes
) -> None:
    sent = all_spans(request)
    body = to_otlp_json(request) if as_json else request.SerializeToString() + extra
    media = otlp.JSON if as_json else otlp.PROTOBUF
    if gzipped:
        body = gzip.compress(body)
    decoded = otlp.decode(body, media, "gzip" if gzipped else None, 16 * LIMIT)

    expected_rejected: dict[str, int] = {}
    for span in sent:
        if reason := problem(span):
            expected_rejected[reason] = expected_rejected.get(reason, 0) + 1
    kept = [s for s in sent if valid_ids(s)]
    assert decoded.accepted + sum(decoded.rejected.values()) == len(sent)
    assert decoded.accepted == len(kept)
    assert decoded.rejected == expected_rejected

    back = all_spans(ExportTraceServiceRequest.FromString(decoded.wire))
    assert [(s.trace_id, s.span_id, s.parent_span_id, s.name) for s in back] == [
        (s.trace_id, s.span_id, s.parent_span_id, s.name) for s in kept
    ]
    assert [[kv.key for kv in s.attributes] for s in back] == [
        [kv.key for kv in s.attributes] for s in kept
    ]
    if not as_json:  # protobuf passes through byte for byte, span by span
        assert [s.SerializeToString() for s in back] == [s.SerializeToString() for s in kept]
    reply = otlp.response(decoded, media)
    if as_json:
        parsed = json_format.Parse(reply, ExportTraceServiceResponse())
    else:
        parsed = ExportTraceServiceResponse.FromString(reply)
    assert parsed.partial_success.rejected_spans == len(sent) - len(kept)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(0, 120), as_json=st.booleans())
def test_deeply_nested_values_decode_or_are_refused_but_never_half_accepted(
    depth: int, as_json: bool
) -> None:
    request = factory.request([factory.span()])
    # built in place: wrapping a deep value in a new message copies it, up to a depth limit
    attrs = request.resource_spans[0].scope_spans[0].spans[0].attributes
    value = attrs.add(key="deep").value
    for _ in range(depth):
        value = value.array_value.values.add()
    value.string_value = "leaf"
    body = to_otlp_json(request) if as_json else request.SerializeToString()
    decoded = decode_or_refuse(body, otlp.JSON if as_json else otlp.PROTOBUF, None, LIMIT)
    if decoded is not None:
        assert decoded.accepted == 1


def test_a_field_posing_as_the_project_never_reaches_the_log(decoder: SpanDecoder) -> None:
    """A client's unknown fields stay inside the nested request: the project is ours alone."""
    wire = factory.request([factory.span(factory.genai_attrs())]).SerializeToString()
    bodies = [
        wire + unknown_field(15, b"beta"),
        unknown_field(15, b"beta") + wire,
        wire + bytes([15 << 3, 5]),  # field 15 as a varint: the log's schema says string
        wire + bytes([7 << 3, 5]),
    ]
    payloads = []
    for body in bodies:
        decoded = otlp.decode(body, otlp.PROTOBUF, None, LIMIT)
        assert decoded.accepted == 1
        assert all_spans(otlp.parse(decoded.wire, otlp.PROTOBUF)) == all_spans(
            otlp.parse(wire, otlp.PROTOBUF)
        )
        payloads.append(envelope.pack("alpha", decoded.wire))
    batch = decoder.decode(payloads)
    assert batch.llm_calls.column("project_id").to_pylist() == ["alpha"]
    assert batch.duplicates == len(bodies) - 1


# --- (c) the mapping never raises ------------------------------------------------------------

GENAI_KEYS = [
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
    "gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens", "gen_ai.usage.cost",
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.prompt", "gen_ai.completion", "gen_ai.response.finish_reasons",
    "gen_ai.conversation.id", "gen_ai.agent.name", "error.type", "llm.model_name",
    "llm.request.type", "llm.provider", "llm.system", "llm.token_count.prompt",
    "llm.token_count.completion", "llm.token_count.total", "llm.usage.total_tokens",
    "llm.cost.total", "input.value", "output.value", "session.id", "user.id", "enduser.id",
    "agent.name", "openinference.span.kind", "gen_ai.prompt.0.role", "gen_ai.prompt.0.content",
    "gen_ai.prompt.1.content", "gen_ai.completion.0.content", "gen_ai.completion.0.role",
    "gen_ai.completion.0.finish_reason", "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content", "llm.output_messages.0.message.content",
    "_choices", "message", "content", "finish_reason", "exception.type",
]  # fmt: skip
EVENT_NAMES = [
    "gen_ai.content.prompt", "gen_ai.content.completion",
    "gen_ai.client.inference.operation.details", "gen_ai.system.message", "gen_ai.user.message",
    "gen_ai.assistant.message", "gen_ai.choice", "exception",
]  # fmt: skip

json_text = json_docs.map(json.dumps)
deep_json_text = st.integers(100, 1000).map(
    lambda n: '[{"role": "user", "content": ' + "[" * n + "]" * n + "}]"
)
message_like = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.one_of(texts, json_scalars),
            "content": json_docs,
            "parts": json_docs,
            "finish_reason": json_docs,
        },
    ),
    max_size=3,
).map(json.dumps)
weird_numbers = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.sampled_from(
        ["12", "-3", "1e9", "nan", "inf", " 7 ", "0x10", "", "99999999999999999999"]
    ).map(lambda s: AnyValue(string_value=s)),
)
genai_values = st.one_of(
    any_values,
    weird_numbers,
    st.one_of(json_text, message_like, deep_json_text, texts).map(
        lambda s: AnyValue(string_value=s)
    ),
)
genai_attrs = st.lists(
    st.builds(KeyValue, key=st.one_of(st.sampled_from(GENAI_KEYS), texts), value=genai_values),
    max_size=10,
)


@st.composite
def genai_spans(draw: st.DrawFn) -> Span:
    span = draw(random_spans(attrs=genai_attrs))
    # always valid ids: the writer only sees what ingest accepted
    span.trace_id = draw(st.binary(min_size=16, max_size=16).filter(any))
    span.span_id = draw(st.binary(min_size=8, max_size=8).filter(any))
    span.parent_span_id = draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=8)))
    span.kind = draw(st.integers(0, 50))
    span.status.code = draw(st.integers(0, 50))
    for name in draw(st.lists(st.sampled_from(EVENT_NAMES), max_size=4)):
        span.events.append(Span.Event(name=name, attributes=draw(genai_attrs)))
    if draw(st.booleans()):  # make sure the decoder takes the llm_calls path
        span.attributes.append(KeyValue(key="gen_ai.system", value=draw(genai_values)))
    return span


def check_message_column(value: str) -> None:
    """Empty, or messages in the current convention: a list of {role, parts: [...]}."""
    if value == "":
        return
    messages = orjson.loads(value)
    assert isinstance(messages, list)
    for message in messages:
        assert isinstance(message, dict)
        assert isinstance(message.get("parts"), list)


text_values = st.one_of(json_text, message_like, deep_json_text, texts, st.just(""))


@settings(max_examples=150, deadline=None)
@given(
    attrs=st.dictionaries(st.one_of(st.sampled_from(GENAI_KEYS), texts), text_values),
    events=st.lists(
        st.fixed_dictionaries(
            {
                "name": st.one_of(st.sampled_from(EVENT_NAMES), texts),
                "attributes": st.dictionaries(
                    st.one_of(st.sampled_from(GENAI_KEYS), texts), text_values, max_size=4
                ),
            }
        ),
        max_size=4,
    ),
)
def test_message_normalising_never_raises(
    attrs: dict[str, str], events: list[dict[str, Any]]
) -> None:
    input_json, output_json = genai.normalise_messages(attrs, events)
    check_message_column(input_json)
    check_message_column(output_json)


@pytest.fixture
def decoder(store: Store, tmp_path: Path) -> SpanDecoder:
    return SpanDecoder(store, tmp_path / "spool", PriceTable())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    records=st.lists(
        st.tuples(st.sampled_from(["alpha", "beta"]), st.lists(genai_spans(), max_size=12)),
        min_size=1,
        max_size=6,
    )
)
def test_decoding_and_storing_never_raise_on_odd_genai_values(
    store: Store, decoder: SpanDecoder, records: list[tuple[str, list[Span]]]
) -> None:
    """What ingest accepted, the writer decodes and the tables take: no poison records."""
    payloads = [
        envelope.pack(p, factory.request(spans).SerializeToString()) for p, spans in records
    ]
    unique = {(p, s.trace_id.hex(), s.span_id.hex()) for p, spans in records for s in spans}
    batch = decoder.decode(payloads)
    assert len(batch) == len(unique)
    calls, spans = batch.llm_calls, batch.spans
    for name, table in (("llm_calls", calls), ("spans", spans)):
        if table.num_rows:
            store.insert_arrow(name, table)
    for row in calls.to_pylist():
        assert row["duration_ms"] >= 0
        check_message_column(row["input_messages"])
        check_message_column(row["output_messages"])
        keys = {k for k, _ in row["attributes"]}
        assert not keys & {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt"}
    for row in spans.to_pylist():
        for column in ("events", "links"):
            assert row[column] == "" or isinstance(orjson.loads(row[column]), list)


# --- (d) the HTTP endpoint answers 200/400/413/415, never 5xx ---------------------------------

MAX_BODY = 8192
MAX_INFLATED = 32768


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    kind = draw(st.sampled_from(["request", "genai", "junk", "json", "gzip", "big"]))
    content_type = draw(CONTENT_TYPES)
    encoding = draw(st.sampled_from([None, "gzip", "identity"]))
    if kind in ("request", "genai"):
        if kind == "request":
            request = draw(random_requests())
        else:
            request = factory.request(draw(st.lists(genai_spans(), min_size=1, max_size=4)))
        content_type = draw(st.sampled_from([otlp.PROTOBUF, otlp.JSON, content_type]))
        body = to_otlp_json(request) if content_type == otlp.JSON else request.SerializeToString()
        if encoding == "gzip":
            body = gzip.compress(body)
    elif kind == "junk":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = json.dumps(draw(st.one_of(json_docs, otlp_shaped_json()))).encode()
        if encoding == "gzip":
            body = gzip.compress(body)
    elif kind == "gzip":
        body, encoding = draw(gzip_bodies()), "gzip"
    else:
        body = draw(
            st.sampled_from([b"\0" * (MAX_BODY + 1), gzip.compress(b"\0" * MAX_INFLATED * 2)])
        )
        encoding = "gzip" if len(body) <= MAX_BODY else encoding
    encoding = draw(st.one_of(st.just(encoding), ENCODINGS))
    return body, content_type, encoding


def header_safe(value: str | None) -> bool:
    return value is None or all(32 <= ord(c) < 127 for c in value)


def test_endpoint_answers_only_with_ok_or_client_errors(collector_factory) -> None:
    collector = collector_factory(max_body_bytes=MAX_BODY, max_decompressed_bytes=MAX_INFLATED)
    statuses: dict[int, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=http_bodies())
    def post(case: tuple[bytes, str | None, str | None]) -> None:
        body, content_type, encoding = case
        assume(header_safe(content_type) and header_safe(encoding))
        headers = factory.auth(collector.ingest_key)
        if content_type is not None:
            headers["content-type"] = content_type
        if encoding is not None:
            headers["content-encoding"] = encoding
        reply = collector.client.post("/v1/traces", content=body, headers=headers)
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        assert reply.status_code in (200, 400, 413, 415), reply.text
        protobuf = reply.headers["content-type"].startswith(otlp.PROTOBUF)
        if reply.status_code == 200:
            if protobuf:
                ExportTraceServiceResponse.FromString(reply.content)
            else:
                json_format.Parse(reply.content, ExportTraceServiceResponse())
        else:  # a google.rpc.Status in the request's encoding
            status = (
                RpcStatus.FromString(reply.content)
                if protobuf
                else json_format.ParseDict(reply.json(), RpcStatus())
            )
            assert status.code != 0 and status.message

    post()
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses
    # everything acknowledged reaches the store: the writer survived what was accepted
    collector.drain(timeout=20)
    assert collector.runtime.writer.backlog_bytes() == 0
    assert collector.runtime.writer.store_healthy


def test_endpoint_stores_calls_with_hostile_values(collector) -> None:
    """Values that crashed or could crash the mapping: the call is still acknowledged and stored."""
    hostile = {
        "gen_ai.usage.input_tokens": float("inf"),
        "gen_ai.response.finish_reasons": "[" * 300 + "]" * 300,
        "gen_ai.prompt": '[{"role": "user", "content": ' + "[" * 300 + "]" * 300 + "}]",
    }
    attrs = factory.genai_attrs(**hostile)
    del attrs["gen_ai.input.messages"]  # so the deprecated prompt is read
    reply = collector.client.post(
        "/v1/traces",
        content=factory.request([factory.span(attrs)]).SerializeToString(),
        headers={**factory.auth(collector.ingest_key), **factory.PROTOBUF},
    )
    assert reply.status_code == 200
    assert collector.wait_stored("llm_calls", 1) == 1
    (row,) = collector.runtime.store.query(
        "SELECT input_tokens, output_tokens, output_text FROM llm_calls"
    )
    assert (row["input_tokens"], row["output_tokens"]) == (0, 40)
    assert row["output_text"] == "Click 'Forgot password'."


def test_a_body_of_many_gzip_members_is_refused_quickly() -> None:
    """Thousands of tiny members would make inflating quadratic; past 64 the body is refused."""
    member = gzip.compress(b"")
    with pytest.raises(otlp.BadRequest, match="more than 64 members"):
        otlp.decode(member * 20_000, otlp.PROTOBUF, "gzip", LIMIT)
    assert otlp.decode(member * 64, otlp.PROTOBUF, "gzip", LIMIT).accepted == 0
