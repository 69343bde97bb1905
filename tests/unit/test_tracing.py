"""Trace context in Kafka headers: whatever a record carries, reading it never fails, and only a
well-formed traceparent is passed on (anything else starts a new trace)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hookstream.core import tracing
from hookstream.core.records import Outcome
from hookstream.sender.spans import _error_type, _server

HEX = "0123456789abcdef"
trace_ids = st.text(HEX, min_size=32, max_size=32).filter(lambda t: t != "0" * 32)
span_ids = st.text(HEX, min_size=16, max_size=16).filter(lambda s: s != "0" * 16)
flags = st.sampled_from(["00", "01", "02", "ff"])

header_names = st.sampled_from(["traceparent", "tracestate", "content-type", "Traceparent"])
header_values = st.none() | st.binary(max_size=80) | st.text(max_size=80).map(str.encode)
headers = st.lists(st.tuples(header_names, header_values), max_size=5)


@given(headers)
def test_any_headers_are_read_without_error(pairs: list[tuple[str, bytes | None]]) -> None:
    passed = tracing.passed_on(pairs)
    context = tracing.context_from(pairs)
    assert (context is None) == (passed == [])
    if passed:
        assert passed[0][0] == "traceparent"
        linked = tracing.span_context_from(pairs)
        assert linked is not None and linked.is_valid


@given(st.binary(max_size=120))
def test_an_arbitrary_traceparent_is_passed_on_only_when_well_formed(value: bytes) -> None:
    passed = tracing.passed_on([("traceparent", value)])
    if passed:
        version, trace_id, span_id, flag = value.decode().split("-")[:4]
        assert version != "ff" and int(trace_id, 16) and int(span_id, 16) and len(flag) == 2


@given(trace_ids, span_ids, flags, st.text("abc=,1", max_size=20))
def test_a_valid_context_round_trips(trace_id: str, span_id: str, flag: str, state: str) -> None:
    value = f"00-{trace_id}-{span_id}-{flag}".encode()
    pairs = [("traceparent", value), ("tracestate", state.encode())]
    passed = tracing.passed_on(pairs)
    assert passed[0] == ("traceparent", value)
    linked = tracing.span_context_from(pairs)
    assert linked is not None
    assert (linked.trace_id, linked.span_id) == (int(trace_id, 16), int(span_id, 16))
    assert linked.trace_flags == int(flag, 16) & 0xFF
    child = NonRecordingSpan(
        SpanContext(linked.trace_id, 1, is_remote=False, trace_flags=TraceFlags(0x01))
    )
    [(name, injected), *_] = tracing.headers_of(child)
    assert name == "traceparent" and injected == f"00-{trace_id}-{1:016x}-01".encode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent id
        b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has no extras
        b" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"\xff\xfe",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(value: bytes) -> None:
    assert tracing.passed_on([("traceparent", value)]) == []
    assert tracing.context_from([("traceparent", value)]) is None


def test_two_traceparents_are_none() -> None:
    one = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.passed_on([("traceparent", one), ("traceparent", one)]) == []


def test_a_later_version_keeps_its_extra_fields() -> None:
    value = b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"
    assert tracing.passed_on([("traceparent", value)]) == [("traceparent", value)]


def test_an_oversized_or_unprintable_tracestate_is_left_behind() -> None:
    parent = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert tracing.passed_on([parent, ("tracestate", b"a=" + b"x" * 600)]) == [parent]
    assert tracing.passed_on([parent, ("tracestate", b"a=\n")]) == [parent]
    assert tracing.passed_on([parent, ("tracestate", b"a=1")]) == [parent, ("tracestate", b"a=1")]


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"},
    ],
)
def test_tracing_is_off_unless_an_exporter_is_chosen(environ: dict[str, str]) -> None:
    assert tracing.configure("test", environ) is False
    assert not tracing.enabled()
    assert not tracing.tracer().start_span("x").is_recording()


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        },
    ],
)
def test_an_exporter_hookstream_lacks_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(tracing.TracingConfigError):
        tracing.configure("test", environ)
    # Nothing half set up: the process still does not trace.
    assert not tracing.enabled()
    assert isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def test_the_attempt_span_names_the_server_never_the_credentials_path_or_query() -> None:
    assert _server("https://user:pw@hooks.example.com:8443/services/T0/B0/secret?token=x") == {
        "url.scheme": "https",
        "server.address": "hooks.example.com",
        "server.port": 8443,
    }
    assert _server("https://hooks.example.com/a")["server.port"] == 443


@pytest.mark.parametrize(
    ("outcome", "status", "error", "expected"),
    [
        (Outcome.SUCCESS, 204, None, None),
        (Outcome.SKIPPED, None, "webhook deleted", None),
        (Outcome.TEMPORARY_FAILURE, 503, None, "503"),
        (Outcome.TEMPORARY_FAILURE, None, "timeout after 2.0 s", "timeout"),
        (
            Outcome.TEMPORARY_FAILURE,
            None,
            "ClientConnectorError: Cannot connect",
            "ClientConnectorError",
        ),
        (Outcome.TEMPORARY_FAILURE, None, "reading the body failed: x", "_OTHER"),
        (Outcome.REFUSED, None, "destination refused: loopback", "destination_refused"),
    ],
)
def test_error_type_is_low_cardinality(
    outcome: Outcome, status: int | None, error: str | None, expected: str | None
) -> None:
    assert _error_type(outcome, status, error) == expected
