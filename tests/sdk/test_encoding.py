"""Our OTLP encoder writes exactly what the OpenTelemetry exporter's encoder writes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from driftline.sdk.encoding import encode_request
from driftline.sdk.masking import default_mask


def finished_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    spans: list[ReadableSpan] = []
    for service in ("a", "b"):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "n": 3}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("scope-" + service, "1.2", schema_url="https://s/1")
        remote = SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C,
            0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
        )
        parent = set_span_in_context(NonRecordingSpan(remote))
        with tracer.start_as_current_span(
            "outer",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "s": "text é ✓",
                "i": -42,
                "big": 2**62,
                "f": 0.25,
                "b": False,
                "ls": ("x", "y"),
                "li": (1, 2, 3),
                "lf": (1.5,),
                "lb": (True, False),
                "input.value": "mail ann@example.com",
            },
            links=[Link(remote, {"why": "retry"})],
        ) as outer:
            outer.add_event("exception", {"exception.type": "ValueError"}, timestamp=123)
            outer.set_status(Status(StatusCode.ERROR, "broke"))
            with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT) as inner:
                inner.set_status(Status(StatusCode.OK))
    spans.extend(memory.get_finished_spans())
    return spans


def parsed(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_same_message_as_the_opentelemetry_encoder() -> None:
    spans = finished_spans()
    ours = parsed(encode_request(spans))
    theirs = encode_spans(spans)
    assert ours == theirs
    assert len(ours.resource_spans) == 2


def test_mask_applies_to_content_attributes_only() -> None:
    spans = finished_spans()
    ours = parsed(encode_request(spans, default_mask))
    attrs = {kv.key: kv.value for kv in ours.resource_spans[0].scope_spans[0].spans[1].attributes}
    assert attrs["input.value"].string_value == "mail <email>"
    assert attrs["s"].string_value == "text é ✓"


def test_a_failing_mask_hides_the_value() -> None:
    def broken(text: str) -> str:
        raise RuntimeError(text)

    ours = parsed(encode_request(finished_spans(), broken))
    attrs = {kv.key: kv.value for kv in ours.resource_spans[0].scope_spans[0].spans[1].attributes}
    assert attrs["input.value"].string_value == "<mask failed: RuntimeError>"
