"""The span of one delivery attempt: an HTTP client span with hookstream's facts about it.

Its parent is the context the delivery or retry record carries, and its own context goes on
the attempt's `delivery-log` record and its retry record, so a retry's attempt is the child of
the failed attempt that scheduled it and the log-sink's write links back to each attempt.

The attributes follow OpenTelemetry's HTTP client conventions except for the URL: neither
`url.full` nor `url.path` is recorded, only scheme, host and port. Webhook URLs carry tokens in
their paths and queries (chat services' incoming webhooks do), and a trace backend is read by
more people than the delivery log; the webhook id says which endpoint it was.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from yarl import URL

from hookstream.core import tracing
from hookstream.core.kafka import Headers
from hookstream.core.records import Delivery, Outcome, Webhook
from hookstream.core.tracing import TraceHeaders
from hookstream.sender.attempt import Conclusion


def start_attempt(record_headers: Headers) -> Span | None:
    """The span of the attempt a record asks for, started now; None when not tracing."""
    if not tracing.enabled():
        return None
    return tracing.tracer().start_span(
        "POST", context=tracing.context_from(record_headers), kind=SpanKind.CLIENT
    )


def end_attempt(
    span: Span, delivery: Delivery, webhook: Webhook | None, conclusion: Conclusion
) -> None:
    """Describe the attempt on its span (only when sampled: building attributes costs), end it."""
    if span.is_recording():
        attempt = conclusion.attempt
        outcome = conclusion.outcome
        attributes: dict[str, str | int] = {
            "hookstream.outcome": str(outcome),
            "hookstream.attempt.number": attempt.attempt_number,
            "hookstream.webhook.id": delivery.webhook_id,
            "hookstream.delivery.id": delivery.delivery_id,
            "hookstream.event.id": delivery.event_id,
            "hookstream.event.type": delivery.event_type,
            "hookstream.trigger": str(delivery.trigger),
        }
        if conclusion.retry is not None:
            attributes["hookstream.retry.tier"] = conclusion.retry.tier
        if outcome is Outcome.SKIPPED:
            span.update_name("skip delivery")  # no request was made
        else:
            attributes["http.request.method"] = "POST"
            if webhook is not None:
                attributes.update(_server(webhook.url))
        if attempt.status_code is not None:
            attributes["http.response.status_code"] = attempt.status_code
        error_type = _error_type(outcome, attempt.status_code, attempt.error)
        if error_type is not None:
            attributes["error.type"] = error_type
            # No description: the error text may quote the URL (aiohttp's errors do).
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)
    span.end()


def following(span: Span | None, record_headers: Headers) -> TraceHeaders:
    """The trace headers of what an attempt leads to: its span's, or when not tracing the
    record's own, passed on as they came."""
    return tracing.headers_of(span) if span is not None else tracing.passed_on(record_headers)


def _server(url: str) -> dict[str, str | int]:
    """Scheme, host and port of a webhook URL: never its credentials, path or query."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return {}
    server: dict[str, str | int] = {}
    if parsed.scheme:
        server["url.scheme"] = parsed.scheme
    if parsed.host:
        server["server.address"] = parsed.host
    if parsed.port is not None:
        server["server.port"] = parsed.port
    return server


def _error_type(outcome: Outcome, status: int | None, error: str | None) -> str | None:
    """OpenTelemetry's low-cardinality `error.type` of a failed attempt, None for a success."""
    if outcome in (Outcome.SUCCESS, Outcome.SKIPPED):
        return None
    if status is not None:
        return str(status)
    if outcome is Outcome.REFUSED:
        return "destination_refused"
    text = error or ""
    if text.startswith("timeout"):
        return "timeout"
    # `_describe` in sender/http.py writes "<ExceptionClass>: detail"; only the class is kept.
    name = text.partition(":")[0]
    return name if name.isidentifier() else "_OTHER"
