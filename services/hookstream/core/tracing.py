"""W3C trace context on Kafka records, and the tracer every service takes its spans from.

The trace context of an event rides in the `traceparent` and `tracestate` headers of each
record that follows from it: `events` -> `deliveries` -> every `retry.<delay>` -> `delivery-log`.
Those two header names are part of the topics' contract, like `hookstream-due-at-ms`.

Tracing is off unless the standard `OTEL_*` variables choose an exporter (`configure`); the
tracer is then OpenTelemetry's no-op one and a service only passes on the trace headers it
received (`passed_on`, a few byte comparisons), so a pipeline whose router does not trace still
connects a sender's spans to the platform's. A record's trace headers are never trusted: a
malformed traceparent is treated as absent, and the record starts a new trace.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# A record's trace headers as produced: (name, value) pairs, empty when it carries none.
TraceHeaders = list[tuple[str, bytes]]

# version-traceid-parentid-flags in lowercase hex, exactly so for version 00; a later version
# may append fields after a dash. Version ff and all-zero ids are invalid (W3C Trace Context,
# section 3.2).
_IDS = rb"-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
_TRACEPARENT = re.compile(rb"00" + _IDS + rb"|(?!00|ff)[0-9a-f]{2}" + _IDS + rb"(?:-[ -~]*)?")
# tracestate is passed on only while short and printable; otherwise dropped, as W3C allows.
_MAX_TRACESTATE = 512
_PRINTABLE = re.compile(rb"[ -~]*")

_W3C = TraceContextTextMapPropagator()


class TracingConfigError(Exception):
    """The OTEL_* variables ask for something this installation cannot do."""


class _State:
    enabled = False
    tracer: Tracer = trace.NoOpTracer()


def enabled() -> bool:
    """Whether this process records spans: checked before any span work on a hot path."""
    return _State.enabled


def tracer() -> Tracer:
    return _State.tracer


def configure(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up this process's tracer from the standard OTEL_* variables; True if it traces.

    On when `OTEL_TRACES_EXPORTER` names `otlp` or `console`, or when an OTLP endpoint is set
    and no exporter is named; off when it says `none`, when `OTEL_SDK_DISABLED` is true, and
    when nothing is set (not the SDK's own default of `otlp`: a service must not try to reach a
    collector nobody configured). Everything else (endpoint, headers, sampler, batch sizes,
    resource attributes) the SDK reads itself from the same variables. `service.name` is
    `hookstream-<service>` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
    """
    exporters = _exporter_names(environ)
    if not exporters or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # The SDK is imported only here: a process that does not trace never loads it.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"hookstream-{service}"}))
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    trace.set_tracer_provider(provider)
    _State.tracer = provider.get_tracer("hookstream")
    _State.enabled = True
    log.info("%s: tracing on, exporting spans to %s", service, ", ".join(exporters))
    return True


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if any(environ.get(name, "").strip() for name in endpoints) else []
    names = [name.strip() for name in named.split(",") if name.strip()]
    return [] if "none" in names else names


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "otlp":
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol != "http/protobuf":
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: hookstream exports OTLP over "
                "http/protobuf only (a collector's port 4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name}: use otlp, console or none")


def shutdown() -> None:
    """Export what is still buffered; the SDK also does this at exit."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if _State.enabled and callable(stop):
        stop()


# -- trace context in Kafka headers ---------------------------------------------------------


def passed_on(headers: Iterable[tuple[str, bytes | None]]) -> TraceHeaders:
    """A record's trace headers as they are, to carry onto the records that follow from it.

    Empty unless the record has exactly one well-formed traceparent; a tracestate that is
    long or unprintable is left behind.
    """
    parent: bytes | None = None
    state: bytes | None = None
    seen = 0
    for name, value in headers:
        if name == TRACEPARENT:
            parent = value
            seen += 1
        elif name == TRACESTATE and state is None:
            state = value
    if seen != 1 or parent is None or _TRACEPARENT.fullmatch(parent) is None:
        return []
    if state and len(state) <= _MAX_TRACESTATE and _PRINTABLE.fullmatch(state):
        return [(TRACEPARENT, parent), (TRACESTATE, state)]
    return [(TRACEPARENT, parent)]


def context_from(headers: Iterable[tuple[str, bytes | None]]) -> Context | None:
    """The trace context a record's headers name, as a parent for a span; None if none."""
    checked = passed_on(headers)
    if not checked:
        return None
    carrier = {name: value.decode("ascii") for name, value in checked}
    context = _W3C.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def span_context_from(headers: Iterable[tuple[str, bytes | None]]) -> SpanContext | None:
    """The span a record's headers name, to link to; None if none."""
    context = context_from(headers)
    return None if context is None else trace.get_current_span(context).get_span_context()


def headers_of(span: Span) -> TraceHeaders:
    """The trace headers that make `span` the parent of whatever a record leads to."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span))
    return [(name, value.encode("ascii")) for name, value in carrier.items()]
