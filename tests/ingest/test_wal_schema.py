"""The proto schema ClickHouse decodes the log with matches the official OTLP descriptors."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from driftline.ingest import envelope
from tests.factory import genai_attrs, request, span

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_ENUM: "int32",  # enums are read as their number
}


def _ours() -> dict[str, dict[str, tuple[str, int]]]:
    text = (resources.files("driftline.ingest") / "schemas" / "otlp_wal.proto").read_text()
    text = re.sub(r"//.*", "", text)
    messages: dict[str, dict[str, tuple[str, int]]] = {}
    for name, body in re.findall(r"message (\w+) \{((?:[^{}]|\{[^{}]*\})*)\}", text):
        fields = re.findall(r"(?:repeated )?(\w+) (\w+) = (\d+);", body)
        messages[name] = {field: (kind, int(number)) for kind, field, number in fields}
    return messages


OFFICIAL: list[tuple[str, Descriptor]] = [
    ("ExportTraceServiceRequest", trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR),
    ("AnyValue", common_pb2.AnyValue.DESCRIPTOR),
    ("ArrayValue", common_pb2.ArrayValue.DESCRIPTOR),
    ("KeyValueList", common_pb2.KeyValueList.DESCRIPTOR),
    ("KeyValue", common_pb2.KeyValue.DESCRIPTOR),
    ("InstrumentationScope", common_pb2.InstrumentationScope.DESCRIPTOR),
    ("Resource", resource_pb2.Resource.DESCRIPTOR),
    ("Status", trace_pb2.Status.DESCRIPTOR),
    ("Event", trace_pb2.Span.Event.DESCRIPTOR),
    ("Link", trace_pb2.Span.Link.DESCRIPTOR),
    ("Span", trace_pb2.Span.DESCRIPTOR),
    ("ScopeSpans", trace_pb2.ScopeSpans.DESCRIPTOR),
    ("ResourceSpans", trace_pb2.ResourceSpans.DESCRIPTOR),
]


@pytest.mark.parametrize(("name", "descriptor"), OFFICIAL, ids=[n for n, _ in OFFICIAL])
def test_every_field_we_declare_has_the_official_number_and_type(
    name: str, descriptor: Descriptor
) -> None:
    ours = _ours()[name]
    official = {f.name: f for f in descriptor.fields}
    assert ours, f"{name} missing from otlp_wal.proto"
    for field, (kind, number) in ours.items():
        assert field in official, f"{name}.{field} is not an OTLP field"
        expected = official[field]
        assert number == expected.number, f"{name}.{field}"
        wanted = expected.message_type.name if expected.message_type else _SCALARS[expected.type]
        if expected.message_type and expected.message_type.name == "Event":
            wanted = "Event"
        assert kind == wanted, f"{name}.{field}: {kind} != {wanted}"
    # every field the decoder reads is declared (entity refs and dropped counts may be left out)
    read = {"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes", "events",
            "links", "status", "start_time_unix_nano", "end_time_unix_nano"}  # fmt: skip
    if name == "Span":
        assert read <= set(ours)


def test_record_nests_the_request_beside_the_project() -> None:
    req = request([span(genai_attrs())])
    wire = req.SerializeToString()
    ours = _ours()
    assert ours["ExportTraceServiceRequest"] == {"resource_spans": ("ResourceSpans", 1)}
    assert ours["WalRecord"] == {
        "request": ("ExportTraceServiceRequest", 1),
        "project": ("string", 2),
    }
    project, decoded = envelope.unpack(envelope.pack("shop-eu", wire))
    assert project == "shop-eu"
    assert decoded == req
