"""``OTLPExporter``: runs as OpenTelemetry GenAI spans, over OTLP/HTTP (protobuf, gzip).

The configuration is a frozen dataclass: it travels to the worker process inside the
tracker's spec, and ``start()`` there builds the running exporter: a ``SpanAssembler``
(lines -> spans, on the engine's worker thread) and a ``Sender`` (its own thread).
The application's process does nothing more than it does for the files.

Where the spans go, when ``endpoint`` is not given, follows the OpenTelemetry
environment variables: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL, used as
it is), else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL: ``/v1/traces`` is appended),
else ``http://localhost:4318/v1/traces``. Headers come from ``OTEL_EXPORTER_OTLP_HEADERS``
(and ``..._TRACES_HEADERS``; ``..._METRICS_HEADERS`` for the metrics), ``k=v`` pairs
separated by commas, then from ``headers``.
The resource is ``OTEL_RESOURCE_ATTRIBUTES`` with ``service.name`` from
``OTEL_SERVICE_NAME`` (default ``asynctrack``), and a ``service.instance.id`` of its own
(a random UUID) unless ``OTEL_RESOURCE_ATTRIBUTES`` sets one: each exporter, once
started, writes cumulative metric streams of its own, and the metrics data model wants
one writer per stream (two trackers, or two processes, under one resource would be
merged by a backend as one writer). So the id is made per writer: per tracker, again in
a forked child, and per ``asynctrack export`` (a backfill is not the live writer).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from . import _protobuf as pb
from ._metrics import Metrics
from ._protocol import LineExporter
from ._semconv import SCHEMA_URL
from ._sender import RESERVED_HEADERS, Sender, endpoint_parts, without_userinfo
from ._spans import SpanAssembler

__all__ = ["OTLPExporter", "check_headers", "resolve_endpoint", "resolve_headers", "resource_attributes"]

logger = logging.getLogger("asynctrack")

DEFAULT_ENDPOINT: Final = "http://localhost:4318"
_TRACES_PATH: Final = "/v1/traces"
_METRICS_PATH: Final = "/v1/metrics"
#: ``timeout`` at most (about 11.6 days): far beyond any request, and twice it (a close's)
#: far within what a thread's wait takes (``threading.TIMEOUT_MAX``; beyond, OverflowError).
TIMEOUT_MAX: Final = 1e6
#: Seconds between two metrics requests while spans flow (and one at every flush and close).
METRICS_EVERY: Final = 60.0
_SCOPE: Final = "asynctrack"


def _version() -> str:
    from .. import __version__

    return __version__


def resolve_endpoint(endpoint: str | None, environ: Mapping[str, str], signal: str = "traces") -> str:
    """The URL of ``signal`` (``traces`` or ``metrics``): ``endpoint`` (a base URL), or the
    OTel environment variables (``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` used as it is)."""
    path = f"/v1/{signal}"
    if endpoint is None:
        own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
        if own:
            return own
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    base = endpoint.rstrip("/")
    for known in (_TRACES_PATH, _METRICS_PATH):
        if base.endswith(known):
            base = base.removesuffix(known)
    return base + path


#: An HTTP header name: an RFC 9110 token.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What an HTTP header value cannot carry: a control character but the tab (CR, LF, NUL...), DEL,
#: and any character past latin-1 (http.client encodes values as latin-1).
_NOT_IN_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def check_headers(headers: Mapping[str, str], where: str) -> None:
    """Refuse a header HTTP cannot carry, without printing its value (a credential) nor a
    name that is not one (``Authorization: Bearer ...`` given as a name).

    Raises:
        ValueError: a name is not an HTTP token, or one the request sets itself
            (``Content-Type``, ``Content-Encoding``, ``Content-Length``, ``Transfer-Encoding``,
            ``Host``, ``Accept-Encoding``, in any case), or a value holds a control character
            (CR, LF, NUL, ...; the tab is allowed) or a character outside latin-1.
    """
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"{where}: a header name is not an HTTP token (letters, digits and "
                "!#$%&'*+-.^_`|~; the name is not shown)"
            )
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(
                f"{where}: header {name!r} is set by the exporter itself (the request is gzip-"
                "compressed protobuf, its length and host are HTTP's): it cannot be given"
            )
        if _NOT_IN_VALUE.search(value):
            raise ValueError(
                f"{where}: the value of header {name!r} holds a character HTTP cannot carry "
                "(a control character such as CR, LF or NUL, or one outside latin-1; the value "
                "is not shown)"
            )


def _pairs(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (percent-encoded, as OTel's variables are) as a dict."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


def resolve_headers(
    headers: Mapping[str, str] | None, environ: Mapping[str, str], signal: str = "traces"
) -> dict[str, str]:
    """The request headers of ``signal``: the OTel variables' (``OTEL_EXPORTER_OTLP_HEADERS``,
    then ``OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS``), then ``headers``."""
    out = _pairs(environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    out.update(_pairs(environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS", "")))
    out.update(headers or {})
    return out


def resource_attributes(environ: Mapping[str, str], instance_id: str | None = None) -> dict[str, str]:
    """The resource: ``OTEL_RESOURCE_ATTRIBUTES``, ``service.name``, ``service.instance.id``
    (``instance_id``, unless the variable sets one), the SDK's name."""
    attributes = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    service = environ.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes["service.name"] = service
    attributes.setdefault("service.name", "asynctrack")
    if instance_id is not None:
        attributes.setdefault("service.instance.id", instance_id)
    attributes["telemetry.sdk.name"] = "asynctrack"
    attributes["telemetry.sdk.language"] = "python"
    attributes["telemetry.sdk.version"] = _version()
    return attributes


@dataclasses.dataclass(frozen=True, slots=True)
class OTLPExporter:
    """Export every run as an OpenTelemetry GenAI span over OTLP/HTTP, from the worker.

    Pass it as ``AsyncTracker(destination, exporters=[OTLPExporter(...)])``. The files
    stay the source of truth; the export is an extra copy of the same redacted events:
    one span per LangChain run, one trace per root run, ids derived from the run ids
    (so ``asynctrack export`` of the files later sends the same ids).

    Args:
        endpoint: the receiver's base URL (``/v1/traces`` is appended, unless it is
            there already); ``None`` follows the OTel environment variables.
        headers: extra request headers (added to ``OTEL_EXPORTER_OTLP_HEADERS``).
        capture_content: also export message content, tool arguments and results,
            chain inputs and outputs (``gen_ai.input.messages`` ...), redacted as the
            files are.
        timeout: seconds per request; also how long a tracker's ``flush()`` waits for
            the export at most.
        max_queue_bytes: spans waiting to be sent, at most (then dropped and counted
            in ``spans_failed``).
        max_open_bytes: runs started and not yet ended held, at most (then the oldest
            is exported unfinished).
        metrics: also send the GenAI client metrics (token usage, operation duration,
            time to first chunk) to ``/v1/metrics``, at every flush and close and once a
            minute. A receiver that takes none (it answers 404, 405, 415 or 501 there:
            MLflow's server, Arize Phoenix) turns them off by itself, said once in an
            INFO log line; the spans are not affected.

    Raises:
        ValueError: a setting is invalid (checked at construction).
    """

    endpoint: str | None = None
    _: dataclasses.KW_ONLY
    headers: Mapping[str, str] | None = None
    capture_content: bool = False
    timeout: float = 10.0
    max_queue_bytes: int = 16 * 1024 * 1024
    max_open_bytes: int = 16 * 1024 * 1024
    metrics: bool = True

    def __post_init__(self) -> None:
        if self.endpoint is not None and not isinstance(self.endpoint, str):
            raise ValueError(f"endpoint must be a URL string or None, got {self.endpoint!r}")
        if self.headers is not None:
            if not isinstance(self.headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
            ):
                # The names only: a value may be a credential.
                raise ValueError(
                    f"headers must map strings to strings, got a {type(self.headers).__name__}"
                    + (f" of {list(self.headers)!r}" if isinstance(self.headers, Mapping) else "")
                )
            check_headers(self.headers, "headers")
            object.__setattr__(self, "headers", dict(self.headers))
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout <= TIMEOUT_MAX  # NaN fails both
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds, at most {TIMEOUT_MAX:g}, got {self.timeout!r}"
            )
        for name in ("max_queue_bytes", "max_open_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
        # Both signals' URLs checked now, not when the worker starts the exporter (there a
        # bad metrics URL would leave the spans unsent too, said only in the worker's log).
        for signal in ("traces", "metrics") if self.metrics else ("traces",):
            try:
                endpoint_parts(resolve_endpoint(self.endpoint, os.environ, signal))
            except ValueError as exc:
                if self.endpoint is None:
                    raise ValueError(f"{exc} (from the OTEL_EXPORTER_OTLP_* environment)") from None
                raise
            check_headers(
                resolve_headers(None, os.environ, signal),
                f"OTEL_EXPORTER_OTLP_HEADERS or OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS",
            )

    def __repr__(self) -> str:
        # Logged (an exporter that cannot start): no credentials, neither the endpoint's
        # userinfo nor the headers' values.
        endpoint = None if self.endpoint is None else without_userinfo(self.endpoint)
        headers = None if self.headers is None else dict.fromkeys(self.headers, "...")
        rest = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name not in ("endpoint", "headers")
        )
        return f"OTLPExporter(endpoint={endpoint!r}, headers={headers!r}, {rest})"

    def start(self) -> LineExporter:
        """The running exporter, in this process (the worker's): its threads start now."""
        fields = resource()  # one writer: its spans and its metrics under one identity
        metrics = self.metrics_recorder(fields)
        metrics_sender = self.sender(fields, "metrics") if metrics is not None else None
        return _Running(self.assembler(metrics), self.sender(fields), metrics, metrics_sender)

    def metrics_recorder(self, resource: Sequence[bytes], *, backfill: bool = False) -> Metrics | None:
        """The histograms model calls are recorded into (``None`` with ``metrics=False``),
        under ``resource`` (``resource()``); ``backfill``: points carry the calls' own
        times (see ``Metrics``)."""
        if not self.metrics:
            return None
        return Metrics(resource, pb.scope(_SCOPE, _version()), SCHEMA_URL, backfill=backfill)

    def assembler(self, metrics: Metrics | None = None) -> SpanAssembler:
        """A span assembler with these settings (one per tracker: it follows its runs)."""
        return SpanAssembler(
            capture_content=self.capture_content, max_open_bytes=self.max_open_bytes, metrics=metrics
        )

    def sender(
        self,
        resource: Sequence[bytes],
        signal: str = "traces",
        build: Callable[[Sequence[bytes]], bytes] | None = None,
    ) -> Sender:
        """A sender of ``signal`` (``traces`` or ``metrics``) to the resolved endpoint (this
        process's environment); its thread starts now. Spans go under ``resource``
        (``resource()``). ``build`` wraps what is queued into a request (by default:
        spans into one request; of metrics requests, the last)."""
        environ = os.environ

        def spans_request(spans: Sequence[bytes]) -> bytes:
            return pb.request(resource, _SCOPE, version, spans, SCHEMA_URL)

        version = _version()
        traces = signal == "traces"
        return Sender(
            url=resolve_endpoint(self.endpoint, environ, signal),
            headers=resolve_headers(self.headers, environ, signal),
            timeout=float(self.timeout),
            build=build or (spans_request if traces else _latest),
            max_queue_bytes=self.max_queue_bytes,
            user_agent=f"asynctrack/{version}",
            what="span" if traces else "metrics request",
            optional=None if traces else signal,
        )


def resource() -> list[bytes]:
    """The resource of a new writer (a started exporter, a backfill), its attributes encoded:
    from this process's environment, with a ``service.instance.id`` of its own."""
    attributes = resource_attributes(os.environ, str(uuid.uuid4()))
    return [pb.attribute(k, v) for k, v in attributes.items()]


def _latest(requests: Sequence[bytes]) -> bytes:
    """Metrics requests are cumulative: the last one queued holds everything."""
    return requests[-1]


class _Running:
    """An ``OTLPExporter`` at work: assembly on the engine's thread, sending on the senders'."""

    def __init__(
        self,
        assembler: SpanAssembler,
        sender: Sender,
        metrics: Metrics | None = None,
        metrics_sender: Sender | None = None,
    ) -> None:
        self._assembler = assembler
        self._sender = sender
        self._metrics = metrics
        self._metrics_sender = metrics_sender
        self._metrics_sent_at = time.monotonic()
        self._lock = threading.Lock()  # lines(), flush() and close() may come from two threads
        self._closed = False
        self._errors = 0

    def lines(self, lines: Sequence[bytes]) -> None:
        self.records(lines, None, ())

    def records(self, lines: Sequence[bytes], kinds: Sequence[str] | None, runs: Sequence[object]) -> None:
        """``lines()``, told each line's kind and run id (``None``: not told; see ``RecordExporter``)."""
        assembler = self._assembler
        with self._lock:
            if self._closed:
                return
            try:
                spans = assembler.add(lines) if kinds is None else assembler.add_records(lines, kinds, runs)
            except Exception as exc:  # a bug here must not stop the files
                self._errors += 1
                if self._errors == 1:
                    logger.exception("asynctrack: OTLP export could not read recorded events: %r", exc)
                return
            if time.monotonic() - self._metrics_sent_at >= METRICS_EVERY:
                self._send_metrics()
        self._sender.put(spans)

    def _send_metrics(self) -> None:
        """Queue the metrics (under the lock) if they changed since the last request."""
        self._metrics_sent_at = time.monotonic()
        metrics, sender = self._metrics, self._metrics_sender
        if metrics is None or sender is None:
            return
        if sender.declined is not None:
            # The receiver takes no metrics (the sender said so once): stop recording them.
            self._metrics = self._assembler.metrics = None
            return
        if metrics.changed:
            sender.put([metrics.request()])

    def flush(self, timeout: float | None) -> str | None:
        with self._lock:
            self._send_metrics()
        return self._sender.flush(timeout)  # metrics follow within a second, never waited for

    def close(self, timeout: float | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spans = self._assembler.close()
            self._send_metrics()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sender.put(spans)
        self._sender.close(timeout)
        if self._metrics_sender is not None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            self._metrics_sender.close(left)

    def statistics(self) -> Mapping[str, int]:
        return {"spans_exported": self._sender.exported, "spans_failed": self._sender.failed}
