"""Head sampling by trace id: a trace is kept or dropped whole, the same way in every process."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_LOW_64 = (1 << 64) - 1


def keeps_trace(trace_id: int, rate: float) -> bool:
    """The W3C/OTel TraceIdRatioBased rule: compare the id's low 64 bits with rate * 2^64."""
    return (trace_id & _LOW_64) < round(rate * (1 << 64))


class _RatioRoot(Sampler):
    """TraceIdRatioBased whose rate is read at each decision, so `init` can change it."""

    def __init__(self, rate: Callable[[], float]) -> None:
        self._rate = rate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        keep = keeps_trace(trace_id, self._rate())
        decision = Decision.RECORD_AND_SAMPLE if keep else Decision.DROP
        state = get_current_span(parent_context).get_span_context().trace_state
        return SamplingResult(decision, attributes if keep else None, state)

    def get_description(self) -> str:
        return f"DriftlineTraceIdRatio{{{self._rate()}}}"


def ratio_sampler(rate: Callable[[], float]) -> Sampler:
    """Follow the parent's decision; decide roots by trace id at the current rate."""
    return ParentBased(_RatioRoot(rate))
