"""The span of one store write: a batch of attempt records, linked to each attempt's span.

A batch holds attempts of many traces, so, like the router's, its span starts a trace of its
own and links to the attempts (up to the SDK's link limit; the attribute counts them all).
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from hookstream.core import tracing
from hookstream.core.kafka import Headers

# OpenTelemetry's default span link limit: contexts past it would be dropped anyway, so they
# are not even parsed.
MAX_LINKS = 128


def db_system(store_url: str) -> str:
    """OpenTelemetry's `db.system.name` of the store (`sqlite`, `postgresql`)."""
    scheme = store_url.partition(":")[0].split("+", 1)[0]
    return "postgresql" if scheme == "postgres" else scheme


class StoreSpan:
    """The span of one batch, or nothing at all when this process does not trace."""

    __slots__ = ("_links", "_span", "recording")

    def __init__(self, topic: str, size: int, store_url: str) -> None:
        self._span: Span | None = None
        self._links = 0
        # Whether to read the records' headers for links at all.
        self.recording = False
        if not tracing.enabled():
            return
        span = tracing.tracer().start_span("store attempts", kind=SpanKind.CONSUMER)
        self._span = span
        self.recording = span.is_recording()
        if self.recording:
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": size,
                    "db.system.name": db_system(store_url),
                    "db.operation.name": "upsert",
                    "db.collection.name": "attempts",
                }
            )

    def link(self, headers: Headers) -> None:
        """Link the attempt whose record carries `headers`."""
        if self._span is None or self._links >= MAX_LINKS:
            return
        linked = tracing.span_context_from(headers)
        if linked is not None:
            self._span.add_link(linked)
            self._links += 1

    def end(self, stored: int, failure: str | None) -> None:
        span = self._span
        if span is None:
            return
        if self.recording:
            span.set_attribute("db.operation.batch.size", stored)
            if failure is not None:
                span.set_status(Status(StatusCode.ERROR, failure))
        span.end()
