"""OTLP/HTTP delivery: one daemon thread per exporter, a queue bounded by bytes, retries.

``put()`` never blocks: spans past ``max_queue_bytes`` are dropped and counted as
failed. The thread takes up to ``MAX_BATCH_SPANS`` spans at a time (at once when that
many wait, a flush asks, or the exporter closes; else after ``DELAY`` seconds), wraps
them in one ``ExportTraceServiceRequest``, gzips it and POSTs it over one kept-alive
HTTP/1.1 connection (stdlib ``http.client``), each request bounded by ``timeout`` of wall
clock, whole (a receiver that trickles its answer cannot hold it longer).

Connection errors, 429 and 5xx are retried with exponential backoff and full jitter
(0.5, 1, 2, 4, 8 s at most, drawn from the sender's own ``random.Random``), or after the
``Retry-After`` the receiver asked for (up to 60 s; one that is no finite, non-negative
number of seconds nor an HTTP date is read as none), never past the close's deadline; a
retry also carries spans queued since (up to a batch), so while a receiver is down every
span gets tried soon and a flush does not wait for a backlog. After ``MAX_ATTEMPTS`` a
batch is counted as failed; any other answer (400, 401, 404, ...) fails it at once.
Failures are logged once per 10 s with their count.

A sender of something a receiver may not take at all (``optional``: metrics) reads
404, 405, 415 and 501 as "this receiver takes none": it says so in one INFO line, drops
what it holds without counting it as failed, ends its thread and takes nothing more.

``flush(timeout)`` returns once every span queued before it has been tried at least
once (sent, or refused), or at ``timeout``. ``close(timeout)`` sends what is queued
until ``timeout``, then aborts the request in flight (an aborted request is a failure,
whatever part of an answer came), counts what is left as failed, and ends the thread.
"""

from __future__ import annotations

import base64
import collections
import http.client
import io
import json
import logging
import math
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Final

try:  # the otel extra: ISA-L's deflate, a fifth of zlib's instructions at level 1, as small
    from isal.igzip import compress as _gzip_compress
except ImportError:  # pragma: no cover - the test extra installs it
    from gzip import compress as _gzip_compress  # type: ignore[assignment]  # the same call

__all__ = ["Sender"]

logger = logging.getLogger("asynctrack")

MAX_BATCH_SPANS: Final = 512
MAX_ATTEMPTS: Final = 6
DELAY: Final = 1.0  # seconds a partial batch waits for more spans
_BACKOFF_BASE: Final = 0.5
_BACKOFF_MAX: Final = 8.0
_RETRY_AFTER_MAX: Final = 60.0
_WARN_EVERY: Final = 10.0
_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_ABORT_JOIN: Final = 0.25  # seconds for the thread to end once its request is aborted
_CREDENTIAL_MIN: Final = 8  # characters of a header value replaced in an error answer
_PLACED: Final = "\ue000"  # a credential replaced in an error answer, until the rules have run
_GZIP_LEVEL: Final = 1  # ~3x smaller than the protobuf at a quarter of level 6's CPU (measured)

#: Headers the request's framing sets (the sender, or http.client), lower case: one given
#: is refused where headers enter (``check_headers``); a ``Sender`` given one drops it.
RESERVED_HEADERS: Final = frozenset(
    ("content-type", "content-encoding", "content-length", "transfer-encoding", "host", "accept-encoding")
)

# A receiver without the endpoint (404: MLflow's server), without POST there (405: Arize
# Phoenix), without the protobuf encoding there (415), or without the signal (501).
DECLINED: Final = frozenset((404, 405, 415, 501))


def without_userinfo(url: str) -> str:
    """``url`` without the credentials of its authority (``http://user:pw@host`` ->
    ``http://host``): the URL as it may be printed. A password holding a ``/``, ``?`` or
    ``#`` not percent-encoded ends the authority early as ``urlsplit`` reads it: then all
    from ``://`` to the last ``@`` is hidden (``http://…@host``)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://…@{rest.rpartition('@')[2]}"
    return url


def _shown(url: str) -> str:
    """``url`` as a refusal may print it: without its userinfo, query and fragment (a
    query may hold a key); only its scheme when an ``@`` is in the query or fragment
    (what follows it may be a secret's tail as well as a host)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.query or "@" in parts.fragment:
        return f"{parts.scheme}://…"
    shown = without_userinfo(url)
    scheme, sep, rest = shown.partition("://")
    return scheme + sep + rest.split("?", 1)[0].split("#", 1)[0]


def endpoint_parts(url: str) -> urllib.parse.SplitResult:
    """``url`` split and checked: http or https, a host, a port that is a number, no query
    or fragment, no ``@`` after the host; else a ``ValueError`` that prints no credentials
    (``urlsplit``'s own says what it took for the port: the start of a password holding a
    ``/``) and no query."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = _shown(url)
        raise ValueError(f"the OTLP endpoint must be an http:// or https:// URL, got {shown!r}")
    if "?" in url or "#" in url:
        # An OTLP endpoint has none ('/v1/traces' would be appended to it); a query may hold
        # a key: never printed, nor sent.
        raise ValueError(
            f"the OTLP endpoint {_shown(url)!r} has a query string or fragment ('?' or '#', not "
            "shown): an OTLP endpoint has none (a password or token in the URL must be "
            "percent-encoded: '?' as %3F, '#' as %23, '/' as %2F, '@' as %40)"
        )
    if "@" in parts.path:
        # A password or token holding a '/', '?' or '#' (not percent-encoded) ended the host
        # early: the request would go to the part before it, the rest in its request line.
        # Shown from the last '@' on: what was meant as the host (all before it may be secret).
        shown = f"{parts.scheme}://…@{url.rpartition('@')[2]}"
        raise ValueError(
            f"the OTLP endpoint has an '@' after its host in {shown!r}: a password "
            "or token in the URL must be percent-encoded ('/' as %2F, '?' as %3F, '#' as %23, "
            "'@' as %40)"
        )
    try:
        parts.port  # noqa: B018 - read to check it
    except ValueError:
        raise ValueError(
            f"the OTLP endpoint's port is not a number in {_shown(url)!r} (a password in the "
            "URL must be percent-encoded: '/' as %2F, '?' as %3F, '#' as %23, '@' as %40)"
        ) from None
    return parts


def _sent_credentials(headers: Mapping[str, str], parts: urllib.parse.SplitResult) -> tuple[str, ...]:
    """What a request carries that a receiver may echo in an error answer, longest first:
    each header value given (and its last word: the token after ``Basic`` or ``Bearer``)
    of 8 characters or more (shorter ones are ids and flags: replaced, they would hide
    their every occurrence), the URL's user name and password and those of a ``Basic``
    header, decoded (whatever their length); each also as a JSON string escapes it
    (``\\/``, ``\\"``, ``\\\\``, ``\\u...``)."""
    found = set()
    pairs = []
    for value in headers.values():
        words = value.split()
        found.add(value.strip())
        found.update(words[-1:])
        if len(words) == 2 and words[0].lower() == "basic":
            try:
                pairs.append(base64.b64decode(words[1], validate=True).decode("utf-8"))
            except ValueError:  # not base64, or not UTF-8: sent, and replaced, as it is
                pass
    found = {value for value in found if len(value) >= _CREDENTIAL_MIN}
    if "@" in parts.netloc:
        found.update((urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")))
    for pair in pairs:
        found.add(pair)
        found.update(pair.split(":", 1))
    found.discard("")
    for value in list(found):
        escaped = json.dumps(value)[1:-1]
        found.update((escaped, escaped.replace("/", "\\/")))
    return tuple(sorted(found, key=len, reverse=True))


#: An answer's body read at most (its first 200 characters are shown).
_ANSWER_MAX: Final = 64 * 1024


def _answer_text(data: bytes, credentials: Sequence[str]) -> str:
    """A receiver's error answer as it may be shown (logged, returned by ``flush()``,
    printed): the credentials the request carried replaced (however their format), then
    the redaction spec's default rules applied, as to the files; its first 200 characters
    (cut after: a credential cut in two would not be found)."""
    from .._config import DEFAULT_REDACT_KEYS
    from .._redact._redactor import Redactor

    text = data.decode("utf-8", "replace").replace(_PLACED, "")
    for credential in credentials:
        text = text.replace(credential, _PLACED)  # first: the rules may cut one in two
    # A value the rules redact, once: '[REDACTED]' there would read '[REDACTED' (up to ']').
    text = Redactor(DEFAULT_REDACT_KEYS).text(text).replace(_PLACED, "[REDACTED]")
    return text.strip()[:200].strip()


def gzip_body(body: bytes) -> bytes:
    """A request body as it is sent: gzip at ``_GZIP_LEVEL``, no time in its header."""
    return _gzip_compress(body, compresslevel=_GZIP_LEVEL, mtime=0)


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds: a finite, non-negative number of seconds or an HTTP
    date (one past: 0); ``None`` for anything else (``nan``, ``inf``, ``-5``, not a date):
    the conventional backoff then, as without one."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0.0 <= seconds < math.inf else None  # False for NaN
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


class _BoundedReader(io.RawIOBase):
    """A socket's answer read by a deadline (``time.monotonic()``), however it trickles.

    It reads through ``sock.makefile()``'s raw reader, which holds a reference on the
    socket as ``http.client``'s own reader does: a connection closed after its answer
    (HTTP/1.0, ``Connection: close``) closes the socket once the answer is read, not
    before its body (``HTTPConnection.close()`` comes right after the head).
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # io's buffer type
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not end within the request's timeout")
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)  # type: ignore[return-value]  # None: only a non-blocking socket

    def close(self) -> None:
        self._raw.close()  # the socket's reference: closed now if the connection was
        super().close()


class _BoundedSocket:
    """What ``http.client.HTTPResponse`` reads from: its ``makefile`` reads by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_BoundedReader(self._sock, self._deadline))


def _bounded_response(deadline: float) -> Callable[..., http.client.HTTPResponse]:
    """An ``HTTPConnection.response_class`` whose answer is read by ``deadline``."""

    def response(sock: socket.socket, *args: object, **kwargs: object) -> http.client.HTTPResponse:
        return http.client.HTTPResponse(_BoundedSocket(sock, deadline), *args, **kwargs)  # type: ignore[arg-type]  # duck-typed

    return response


class Sender:
    """Sends encoded spans to an OTLP/HTTP traces endpoint from its own daemon thread.

    Args:
        url: the full traces URL (``http(s)://host:port/v1/traces``).
        headers: extra request headers (authentication, MLflow's experiment id).
        timeout: seconds per request (connect, send, answer).
        build: wraps a list of encoded spans into the request body (not compressed).
        max_queue_bytes: bound on the spans waiting to be sent.
        what: what is queued, for the log ("span", "metrics request").
        optional: what the receiver may not take at all (``"metrics"``): an answer in
            ``DECLINED`` then turns the sender off (``declined``), not counted as failed.
            ``None``: every refusal is a failure.

    Attributes:
        declined: the receiver's answer that turned an ``optional`` sender off, else ``None``.
    """

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        timeout: float,
        build: Callable[[Sequence[bytes]], bytes],
        max_queue_bytes: int,
        user_agent: str,
        what: str = "span",
        optional: str | None = None,
    ) -> None:
        parts = endpoint_parts(url)
        self.url = without_userinfo(url)  # the credentials are sent, never printed
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""  # endpoint_parts checked there is one
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "User-Agent": user_agent,
        }
        for name, value in headers.items():  # merged whatever the case: one value a header
            key = name.lower()
            if key in RESERVED_HEADERS:
                continue  # the request's own: a second Content-Length or Content-Type breaks it
            for same in [k for k in self._headers if k.lower() == key]:
                del self._headers[same]
            self._headers[name] = value
        if "@" in parts.netloc and not any(k.lower() == "authorization" for k in headers):
            # Credentials in the URL go as HTTP Basic, as the OTel exporters (requests) send them.
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        # Never shown, even echoed by the receiver in an error answer (_answer_text).
        self._credentials = _sent_credentials(
            {
                k: v
                for k, v in self._headers.items()
                if k not in ("Content-Type", "Content-Encoding", "User-Agent")
            },
            parts,
        )
        self._timeout = timeout
        self._what = what
        self._optional = optional
        self.declined: str | None = None
        self._build = build
        self._max_queue_bytes = max_queue_bytes
        self._random = random.Random()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._accepted = 0  # spans accepted into the queue, ever
        self._tried = 0  # of those, how many (in order) have been in a finished attempt
        self._flushing = 0  # flush() calls waiting
        self._closing = False
        self._deadline = float("inf")  # the close's, time.monotonic()
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False  # by close(): no answer read from then on is a success
        self.exported = 0
        self.failed = 0
        self.last_error: str | None = None
        self._error_tried = -1  # _tried when last_error was set
        self._first_at = 0.0  # when the oldest span waiting was queued (time.monotonic())
        self._batch_end = 0
        self._warned_at = -_WARN_EVERY
        self._logged: tuple[int, str | None] = (0, None)
        self._thread = threading.Thread(target=self._main, name="asynctrack-otlp", daemon=True)
        self._thread.start()

    # -- any thread ----------------------------------------------------------------------------

    def put(self, spans: Sequence[bytes], *, block: bool = False) -> None:
        """Queue encoded spans; past the byte bound they are dropped and counted failed,
        or, with ``block`` (a backfill), wait for room while the sender runs."""
        if not spans:
            return
        with self._cond:
            if self.declined is not None:
                return  # the receiver takes none: nothing lost, nothing to count
            if block:
                need = min(sum(map(len, spans)), self._max_queue_bytes)
                self._cond.wait_for(
                    lambda: self._queued_bytes + need <= self._max_queue_bytes or not self._thread.is_alive()
                )
            if self.declined is not None:
                return
            if self._closing:
                self.failed += len(spans)
                return
            room = self._max_queue_bytes - self._queued_bytes
            total = sum(map(len, spans))
            if total <= room:  # all of them (the common case: summed in C, no loop)
                room -= total
                taken = len(spans)
            else:
                taken = 0
                for span in spans:
                    size = len(span)
                    if size > room:
                        break
                    room -= size
                    taken += 1
            if taken < len(spans):
                self.failed += len(spans) - taken
                self._note_error(f"export queue full (max_queue_bytes): {self._what}s dropped")
            if taken:
                was_empty = not self._queue
                if was_empty:
                    self._first_at = time.monotonic()
                self._queue.extend(spans[:taken] if taken < len(spans) else spans)
                self._queued_bytes = self._max_queue_bytes - room
                self._accepted += taken
                if was_empty or len(self._queue) >= MAX_BATCH_SPANS:
                    self._cond.notify_all()  # the first span starts the batch's delay

    def flush(self, timeout: float | None) -> str | None:
        """Wait until every span queued before this call was tried once (``timeout``
        ``None``: at most the request timeout). The error text if one of their attempts
        failed, or if the timeout came first; else ``None``."""
        start = time.monotonic()
        deadline = start + (self._timeout if timeout is None else max(timeout, 0.0))
        with self._cond:
            target = self._accepted
            start_tried = self._tried
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._tried < target and self._thread.is_alive():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return f"the export did not finish within {deadline - start:.3g} s"
                    self._cond.wait(left)
            finally:
                self._flushing -= 1
            if self._error_tried > start_tried and self.last_error:
                return self.last_error
            return None

    def close(self, timeout: float | None) -> None:
        """Send what is queued until ``timeout``, then stop; what is left counts as failed."""
        with self._cond:
            self._closing = True
            if timeout is not None:
                self._deadline = min(self._deadline, time.monotonic() + max(timeout, 0.0))
            self._cond.notify_all()
            deadline = self._deadline
        # The thread stops sending at the deadline; a request in flight then is aborted.
        self._thread.join(None if timeout is None else max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            self._abort()
            self._thread.join(_ABORT_JOIN)
        self._log_failures(force=True)

    def _abort(self) -> None:
        """Break the request in flight (its socket is shut down under it): it fails."""
        self._aborted = True
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- the thread --------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            batch: list[bytes] = []
            attempts = 0
            while True:
                batch, stop = self._take(batch)
                if stop:
                    break
                attempts += 1
                error, retryable, retry_after = self._send(batch)
                if self.declined is not None:
                    logger.info(
                        "asynctrack: OTLP export: %s answered %s: this receiver takes no %s, "
                        "so none are sent to it (spans are not affected)",
                        self.url,
                        self.declined,
                        self._optional,
                    )
                    return
                with self._cond:
                    self._tried = max(self._tried, self._batch_end)
                    if error is None:
                        self.exported += len(batch)
                    else:
                        self.last_error = error
                        self._error_tried = self._tried
                    self._cond.notify_all()
                if error is None:
                    batch, attempts = [], 0
                    continue
                if not retryable or attempts >= MAX_ATTEMPTS:
                    with self._cond:
                        self.failed += len(batch)
                    self._log_failures()
                    batch, attempts = [], 0
                    continue
                self._log_failures()
                if retry_after is None:
                    self._pause(self._backoff(attempts), interruptible=True)
                else:
                    self._pause(min(retry_after, _RETRY_AFTER_MAX), interruptible=False)
        finally:
            self._close_connection()
            with self._cond:
                if self.declined is None:
                    self.failed += len(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._tried = self._accepted
                self._cond.notify_all()

    def _take(self, batch: list[bytes]) -> tuple[list[bytes], bool]:
        """Wait for spans; top ``batch`` up to a full batch. ``(batch, stop)``.

        A batch goes when it is full, when a flush or the close asks, when the oldest
        waiting span has waited ``DELAY``, or at once for a retry.
        """
        with self._cond:
            queue = self._queue
            while True:
                now = time.monotonic()
                if self._closing and now >= self._deadline:
                    self.failed += len(batch)
                    return [], True
                if batch or len(queue) >= MAX_BATCH_SPANS:
                    break
                if queue and (self._flushing or self._closing or now - self._first_at >= DELAY):
                    break
                if self._closing:
                    return [], True  # nothing left to send
                wait = DELAY - (now - self._first_at) if queue else None
                self._cond.wait(wait)
            taken = [queue.popleft() for _ in range(min(MAX_BATCH_SPANS - len(batch), len(queue)))]
            self._queued_bytes -= sum(map(len, taken))
            self._cond.notify_all()  # a blocked put() has room now
            self._first_at = time.monotonic()
            # Spans are taken in the order they were accepted: this attempt covers every
            # accepted span up to _batch_end.
            self._batch_end = (self._batch_end if batch else self._tried) + len(taken)
            return batch + taken, False

    def _send(self, batch: list[bytes]) -> tuple[str | None, bool, float | None]:
        """One POST: ``(error text or None, retryable, Retry-After seconds or None)``."""
        try:
            body = gzip_body(self._build(batch))
            conn = self._connection()
            conn.timeout = self._request_timeout()
            deadline = time.monotonic() + conn.timeout
            if conn.sock is None:
                conn.connect()
            # A socket's timeout bounds each read and restarts at every byte: the answer is read
            # by the request's deadline, whole (and the send is bounded by what is left of it).
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.response_class = _bounded_response(deadline)  # type: ignore[assignment]  # a factory
            conn.request("POST", self._path, body=body, headers=self._headers)
            if _QUICKACK is not None and conn.sock is not None:
                # Acknowledge the answer's first segment at once: a receiver that writes
                # its answer's head and body apart without TCP_NODELAY (Python's
                # http.server) holds the body until that ACK, which Linux delays up to
                # 40 ms: one batch per ~50 ms, ~10k spans/s at most (measured).
                conn.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            response = conn.getresponse()
            # An answer's body is read up to _ANSWER_MAX (a receiver's error page, however
            # large, costs that much memory and redaction at most); one left partly unread
            # cannot share its connection with the next request.
            data = response.read(_ANSWER_MAX)
            if not response.isclosed():
                self._close_connection()
            if self._aborted:
                raise ConnectionAbortedError("the request was aborted at the close's deadline")
        except (OSError, http.client.HTTPException) as exc:
            self._close_connection()
            if self._aborted:  # what the abort made (RemoteDisconnected, a reset) is not the cause
                return (
                    f"could not send {self._what}s to {self.url}: timed out (no whole answer by the "
                    "close's deadline: the request was aborted)",
                    True,
                    None,
                )
            return f"could not send {self._what}s to {self.url}: {exc!r}", True, None
        except Exception as exc:  # the thread must live: the batch fails, counted
            # Not retried (the same request would fail the same way), its message not shown:
            # http.client's quote a header's value (a credential).
            self._close_connection()
            return (
                f"could not send {self._what}s to {self.url}: {type(exc).__name__} while making "
                "the request (not retried; its message is not shown)",
                False,
                None,
            )
        if 200 <= response.status < 300:
            return None, False, None
        if self._optional is not None and response.status in DECLINED:
            self.declined = f"HTTP {response.status} {response.reason}".rstrip()
            return None, False, None
        text = _answer_text(data, self._credentials)
        error = f"{self.url} answered HTTP {response.status}: {text}"
        if response.status == 429 or response.status >= 500:
            return error, True, _retry_after(response.getheader("Retry-After"))
        return f"{error} (not retried)", False, None

    def _request_timeout(self) -> float:
        if self._closing:
            return max(min(self._timeout, self._deadline - time.monotonic()), 0.001)
        return self._timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _backoff(self, attempts: int) -> float:
        return self._random.uniform(0.0, min(_BACKOFF_BASE * 2 ** (attempts - 1), _BACKOFF_MAX))

    def _pause(self, delay: float, *, interruptible: bool) -> None:
        """Wait ``delay`` before a retry, or less: until the close's deadline, or (for a
        backoff, not a Retry-After) until a flush asks."""
        # Never past _RETRY_AFTER_MAX, nor the close's deadline, whatever the delay: a NaN
        # fails every comparison (min() would keep it, and Condition.wait(nan) spins).
        if not 0.0 <= delay <= _RETRY_AFTER_MAX:
            delay = 0.0 if delay < 0.0 else _RETRY_AFTER_MAX
        end = time.monotonic() + delay
        with self._cond:
            flushing_at_start = self._flushing
            while True:
                now = time.monotonic()
                if self._closing and not end <= self._deadline:
                    end = self._deadline
                if now >= end or (interruptible and self._flushing > flushing_at_start):
                    return
                self._cond.wait(end - now)

    # -- errors --------------------------------------------------------------------------------

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self._log_failures()

    def _log_failures(self, *, force: bool = False) -> None:
        """Log the last error with the counts: at most once per 10 s, and only news."""
        now = time.monotonic()
        news = (self.failed, self.last_error) != self._logged
        if self.last_error is None or not news or (not force and now - self._warned_at < _WARN_EVERY):
            return
        if force and self.failed == self._logged[0]:
            return  # at close: only failures not said yet
        self._warned_at = now
        self._logged = (self.failed, self.last_error)
        logger.warning(
            "asynctrack: OTLP export: %s (%d %s(s) failed so far, %d exported)",
            self.last_error,
            self.failed,
            self._what,
            self.exported,
        )
