"""A real OTLP/HTTP trace receiver on loopback, as a collector would be: `POST /v1/traces`.

Decodes the protobuf export requests the services send (opentelemetry-proto) into `Span`s the
tests assert on. Runs on its own event loop thread, like `tests/receiver.py`.

`python -m tests.otlp --port N` runs it alone, counting spans (the bench's "tracing on" run).
"""

from __future__ import annotations

import argparse
import gzip
import signal
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.helpers import wait_for
from tests.loopback import LoopbackServer

# OTLP's span kinds by number (opentelemetry/proto/trace/v1/trace.proto).
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_ERROR = 2


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[Link, ...]
    status_code: int  # 0 unset, 1 ok, 2 error

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR


class OtlpReceiver(LoopbackServer):
    def __init__(self, port: int = 0, keep: bool = True) -> None:
        super().__init__(port, client_max_size=64 * 1024 * 1024)
        self._keep = keep
        self._spans: list[Span] = []
        self.count = 0
        self._lock = threading.Lock()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._export)

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait(self, condition: Any, what: str, timeout: float = 60) -> list[Span]:
        """The spans so far, once `condition(spans)` holds."""
        return list(
            wait_for(lambda: (got := self.spans()) and condition(got) and got, timeout, what=what)
        )

    async def _export(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        spans = list(_spans_of(export))
        with self._lock:
            self.count += len(spans)
            if self._keep:
                self._spans.extend(spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


def _spans_of(export: ExportTraceServiceRequest) -> Any:
    for resource_spans in export.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    service=service,
                    name=span.name,
                    kind=KINDS.get(span.kind, str(span.kind)),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    links=tuple(Link(k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                    status_code=span.status.code,
                )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.port, keep=False).start()
    print(f"otlp receiver on {receiver.endpoint}", flush=True)
    stop = threading.Event()
    # SIGTERM as well as SIGINT: a shell's background job ignores SIGINT.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print(f"otlp receiver: {receiver.count} spans", flush=True)
    receiver.stop()


if __name__ == "__main__":
    main()
