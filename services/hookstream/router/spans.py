"""The span of one routing transaction, and the trace headers each event's deliveries carry.

One span per batch, not per event: a batch routes up to `router_batch_size` events of as many
traces in one transaction, so the span starts a trace of its own and links to each event's
context. The deliveries of an event keep that event's context (its publisher's span stays
their parent); an event without a valid one gets the batch span's, so its trace starts at
routing.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from hookstream.core import tracing
from hookstream.core.kafka import Headers
from hookstream.core.tracing import TraceHeaders


class RoutingSpan:
    """The span of one batch, or nothing at all when this process does not trace."""

    __slots__ = ("_fallback", "_recording", "_span")

    def __init__(self, topic: str, size: int) -> None:
        self._span: Span | None = None
        self._recording = False
        self._fallback: TraceHeaders = []
        if not tracing.enabled():
            return
        span = tracing.tracer().start_span("route events", kind=SpanKind.CONSUMER)
        self._span = span
        self._recording = span.is_recording()
        self._fallback = tracing.headers_of(span)
        if self._recording:
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": size,
                }
            )

    def headers_for(self, event_headers: Headers) -> TraceHeaders:
        """The trace headers of an event's deliveries; links the event when recording."""
        own = tracing.passed_on(event_headers)
        if not own:
            return self._fallback
        if self._recording:
            linked = tracing.span_context_from(own)
            if linked is not None and self._span is not None:
                self._span.add_link(linked)
        return own

    def end(self, events: int, routed: int, dead_letters: int, failure: str | None) -> None:
        span = self._span
        if span is None:
            return
        if self._recording:
            span.set_attributes(
                {
                    "hookstream.events": events,
                    "hookstream.deliveries": routed,
                    "hookstream.dead_letters": dead_letters,
                }
            )
            if failure is not None:
                span.set_status(Status(StatusCode.ERROR, failure))
        span.end()
