"""A loopback OTLP/HTTP traces receiver that decodes with ``opentelemetry-proto``.

``with OTLPReceiver() as receiver:`` serves ``POST /v1/traces`` on ``receiver.endpoint``
(``http://127.0.0.1:<port>``): it gunzips the body, decodes it with the classes
collectors use (``ExportTraceServiceRequest.FromString``) and keeps every request, its
raw bytes and headers. It can be told to refuse (``refuse(status, retry_after=...)``
for the next N requests), to stall (``stall()`` until ``release()``), to trickle
(``trickle(interval)``: every answer a 200 status line, then one byte per ``interval``
seconds, never ending, until ``release()``), to close each connection after its answer
(``closing = True``: ``Connection: close``, every answer with a body, written 50 ms after
its head), or be stopped.

``wait_for_spans(n, timeout)`` returns once ``n`` spans arrived (a condition, no sleep).
``POST /v1/metrics`` is kept apart (``metrics``, decoded with
``ExportMetricsServiceRequest``; ``metrics_status = 405`` answers 405 there, as a
traces-only receiver does) and never counts as an attempt, a refusal or a stall of the
traces endpoint.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if receiver.trickle_interval is not None:
            if self.path != "/v1/metrics":
                receiver.arrived(self.path, dict(self.headers), body)
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")  # at once, then the headers' bytes trickle
            for byte in b"X-Pad: " + b"a" * 100_000:
                if receiver.release_event.wait(receiver.trickle_interval):
                    return
                self.wfile.write(bytes([byte]))
            return
        if self.path == "/v1/metrics":
            status = receiver.metrics_request(gzip.decompress(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        receiver.arrived(self.path, dict(self.headers), body)
        if receiver.stalled.is_set():
            receiver.release_event.wait(60)
        status, retry_after = receiver.answer()
        if status != 200:
            data = b"refused" if receiver.refusal_body is None else receiver.refusal_body(self.headers)
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(data)))
            self._end_headers(receiver)
            self.wfile.write(data)
            return
        try:
            raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
            request = ExportTraceServiceRequest.FromString(raw)
        except Exception as exc:  # a request that does not decode fails the test that reads errors
            receiver.errors.append(repr(exc))
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        receiver.accepted(raw, request)
        answer = ExportTraceServiceResponse()
        if receiver.closing:
            answer.partial_success.SetInParent()  # an answer with a body (2 bytes)
        data = answer.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(data)))
        self._end_headers(receiver)
        self.wfile.write(data)

    def _end_headers(self, receiver: OTLPReceiver) -> None:
        if receiver.closing:
            self.send_header("Connection", "close")  # the server closes it after the answer
        self.end_headers()
        if receiver.closing:
            self.wfile.flush()
            time.sleep(0.05)  # the body comes apart from the head


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: OTLPReceiver


class OTLPReceiver:
    """A traces receiver on 127.0.0.1, port chosen by the system."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._cond = threading.Condition()
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []  # every accepted request body, uncompressed
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.attempts = 0  # POSTs received, refused or not
        self.arrival_times: list[float] = []  # time.monotonic() of each POST
        self.errors: list[str] = []
        self._refusals: list[tuple[int, str | None]] = []
        #: The body of a refusal, from the request's headers (else ``refused``).
        self.refusal_body: Callable[[Mapping[str, str]], bytes] | None = None
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.metrics_status = 200  # the answer to /v1/metrics (404, 405...: a traces-only receiver)
        self.metrics_attempts = 0
        self.stalled = threading.Event()
        self.trickle_interval: float | None = None
        self.closing = False  # answer with 'Connection: close', the body apart from the head
        self.release_event = threading.Event()
        self._stopped = False

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the port (a later request is refused by the system)."""
        if self._stopped:
            return
        self._stopped = True
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- behaviour ----------------------------------------------------------------------

    def refuse(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        with self._cond:
            self._refusals.extend([(status, retry_after)] * times)

    def stall(self) -> None:
        """Hold every request (without answering) until ``release()``."""
        self.release_event.clear()
        self.stalled.set()

    def trickle(self, interval: float) -> None:
        """Answer every request (traces and metrics) with a 200 status line, then one byte
        of headers per ``interval`` seconds, never ending, until ``release()``."""
        self.release_event.clear()
        self.trickle_interval = interval

    def release(self) -> None:
        self.trickle_interval = None
        self.stalled.clear()
        self.release_event.set()

    # -- the handler's side ---------------------------------------------------------------

    def arrived(self, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._cond:
            self.attempts += 1
            self.arrival_times.append(time.monotonic())
            self.paths.append(path)
            self.headers.append(headers)
            self._cond.notify_all()

    def metrics_request(self, raw: bytes) -> int:
        with self._cond:
            self.metrics_attempts += 1
            if self.metrics_status != 200:
                self._cond.notify_all()
                return self.metrics_status
            self.metrics.append(ExportMetricsServiceRequest.FromString(raw))
            self._cond.notify_all()
            return 200

    def wait_for_metrics(self, n: int = 1, timeout: float = 10.0) -> list[ExportMetricsServiceRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: self.metrics_attempts >= n, timeout):
                raise TimeoutError(f"{self.metrics_attempts} metrics request(s) arrived, waited for {n}")
            return list(self.metrics)

    def answer(self) -> tuple[int, str | None]:
        with self._cond:
            return self._refusals.pop(0) if self._refusals else (200, None)

    def accepted(self, raw: bytes, request: ExportTraceServiceRequest) -> None:
        with self._cond:
            self.raw.append(raw)
            self.requests.append(request)
            self._cond.notify_all()

    # -- reading --------------------------------------------------------------------------

    @property
    def spans(self) -> list[Any]:
        with self._cond:
            return [
                span
                for request in self.requests
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[Any]:
        """The spans, once at least ``n`` arrived; raises ``TimeoutError`` at ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._count() >= n, timeout):
                raise TimeoutError(f"{self._count()} span(s) arrived, waited for {n}")
        return self.spans

    def wait_for_attempts(self, n: int, timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.attempts >= n, timeout):
                raise TimeoutError(f"{self.attempts} request(s) arrived, waited for {n}")

    def _count(self) -> int:
        return sum(
            len(scope_spans.spans)
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        )


def attributes(span: Any) -> dict[str, Any]:
    """A decoded span's attributes as a dict of Python values."""
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def any_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None
