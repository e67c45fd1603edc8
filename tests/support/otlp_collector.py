"""A real OTLP receiver on 127.0.0.1 for the tests: OTLP/HTTP (``http.server`` in a
thread) and OTLP/gRPC (grpcio), decoding the protobuf requests it is sent. Both are
``LoopbackServer``s (``with http_collector() as collector:``). The HTTP one can be told
to answer slowly, to play a collector that cannot keep up."""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.loopback import HTTPThread, LoopbackServer, QuietHandler


class Collector(LoopbackServer):
    """What an OTLP receiver was sent: ``requests`` as ``(path, headers, body)``, gRPC's
    under the OTLP/HTTP paths, so ``spans()`` and ``logs()`` read either alike."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.delay_s = delay_s
        """How long each request waits before it is answered (OTLP/HTTP)."""

    def keep(self, path: str, headers: dict[str, str], body: bytes) -> None:
        with self.lock:
            self.requests.append((path, headers, body))

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [body for p, _, body in self.requests if p == path]

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, flattened, with its resource's attributes."""
        out = []
        for body in self.bodies("/v1/traces"):
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex() or None,
                                "status": span.status.code,
                                "attributes": attributes_of(span.attributes),
                                "events": [
                                    (e.name, attributes_of(e.attributes)) for e in span.events
                                ],
                                "links": [link.span_id.hex() for link in span.links],
                                "resource": resource,
                                "scope": scope_spans.scope.name,
                            }
                        )
        return out

    def logs(self) -> list[dict[str, Any]]:
        """Every OTel log record received."""
        out = []
        for body in self.bodies("/v1/logs"):
            request = ExportLogsServiceRequest()
            request.ParseFromString(body)
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        out.append(
                            {
                                "trace_id": record.trace_id.hex(),
                                "span_id": record.span_id.hex(),
                                "event_name": record.event_name,
                                "time_unix_nano": record.time_unix_nano,
                                "severity_text": record.severity_text,
                                "severity_number": record.severity_number,
                                "body": value_of(record.body),
                                "attributes": attributes_of(record.attributes),
                                "scope": scope_logs.scope.name,
                            }
                        )
        return out


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(attributes: Any) -> dict[str, Any]:
    return {a.key: value_of(a.value) for a in attributes}


class HTTPCollector(Collector):
    """An OTLP/HTTP receiver (protobuf; gzip as ``OTEL_EXPORTER_OTLP_COMPRESSION`` sends)."""

    def _launch(self) -> None:
        collector = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if collector.delay_s:
                    time.sleep(collector.delay_s)
                collector.keep(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if self.path == "/v1/logs":
                    reply = ExportLogsServiceResponse().SerializeToString()
                else:
                    reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._http = HTTPThread(Handler)
        self.port = self._http.port

    def _halt(self) -> str:
        return self._http.close()


class GRPCCollector(Collector):
    """An OTLP/gRPC trace and logs receiver."""

    def _launch(self) -> None:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        collector = self

        def keep(path: str, request: Any, context: Any) -> None:
            headers = {k: v for k, v in context.invocation_metadata()}
            collector.keep(path, headers, request.SerializeToString())

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> ExportTraceServiceResponse:
                keep("/v1/traces", request, context)
                return ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> ExportLogsServiceResponse:
                keep("/v1/logs", request, context)
                return ExportLogsServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._grpc)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._grpc)
        self.port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

    def _halt(self) -> str:
        self._grpc.stop(grace=None)
        return ""


def http_collector(delay_s: float = 0.0) -> HTTPCollector:
    """An OTLP/HTTP receiver, to use as ``with http_collector() as collector:``."""
    return HTTPCollector(delay_s)


def grpc_collector() -> GRPCCollector:
    """An OTLP/gRPC receiver, to use as ``with grpc_collector() as collector:``."""
    return GRPCCollector()
