"""Local AWS test doubles: a moto server in a child process and a fault-injecting proxy.

This module is test infrastructure. It deliberately imports nothing from the rest of
``asynctrack`` so that it can be run as ``python -m _infra.aws`` (the moto
launcher) without pulling in the package under test, and so that a bug in the package can
never break the fixtures used to find it.

Three pieces:

* :class:`MotoServer` starts moto's HTTP server in a separate process bound to
  ``127.0.0.1`` on a free port. A separate process (instead of moto's in-process
  ``ThreadedMotoServer``) keeps moto's request handling off the test process's GIL, keeps
  moto's global state and its monkey-patching out of the code under test, and lets a test
  kill the "cloud" for real.
* The ``__main__`` launcher (:func:`main`) that the child process runs. Before serving it
  applies :func:`patch_moto_sagemaker_search`, a small documented patch that bridges one
  moto gap needed by ``sagemaker.core.analytics.ExperimentAnalytics``.
* :class:`FaultProxy`, a thread-based HTTP/1.1 proxy that sits between a client (botocore,
  aiobotocore) and the moto server and injects faults (HTTP 500, S3 ``SlowDown`` 503,
  connection reset, stalled response, truncated response), either at random with a seeded
  generator or from an explicit schedule.

Everything is POSIX-only (it relies on ``select`` working on pipes), which is what the
project's machines and CI run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.client
import logging
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, TypeAlias, get_args

from _infra.child_server import untether

__all__ = [
    "FAULT_KINDS",
    "FaultKind",
    "FaultProxy",
    "MotoServer",
    "ProxyRequest",
    "ProxyStats",
    "main",
    "patch_moto_sagemaker_search",
]

_LOG = logging.getLogger(__name__)

# The line the child process prints once moto is listening. A distinctive prefix (rather
# than a bare number) means stray output on the child's stdout, e.g. from a library that
# prints at import time, cannot be mistaken for the port.
_PORT_LINE_PREFIX: Final = b"ASYNCTRACK_MOTO_PORT="

_LOOPBACK: Final = "127.0.0.1"


# --------------------------------------------------------------------------------------
# MotoServer
# --------------------------------------------------------------------------------------


class MotoServer:
    """A moto server running in a child process on ``127.0.0.1`` with a free port.

    The child runs ``python -m _infra.aws`` (see :func:`main`), which patches
    moto's SageMaker ``Search`` (see :func:`patch_moto_sagemaker_search`), starts
    ``moto.server.ThreadedMotoServer`` on port 0 and prints the port it was given.

    The child exits as soon as its standard input reaches end-of-file. :meth:`stop` closes
    that pipe, and the operating system closes it too if the test process dies (even by
    ``SIGKILL``), so a crashed test run cannot leave orphaned moto servers behind.

    Example::

        with MotoServer() as moto:
            s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, ...)
            ...
            moto.reset()  # forget every bucket, experiment, ...

    Args:
        start_timeout: Seconds to wait for the child to report its port before giving up.
        stop_timeout: Seconds to wait for the child to exit after its stdin is closed
            before it is killed.
    """

    def __init__(self, *, start_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> MotoServer:
        """Start the child process and wait until it reports its port.

        Returns:
            This server, so that ``server = MotoServer().start()`` works.

        Raises:
            RuntimeError: If the server is already running, or the child exits before
                reporting a port (the message includes the end of its stderr).
            TimeoutError: If the child does not report a port within ``start_timeout``.
        """
        if self._process is not None:
            raise RuntimeError("MotoServer is already running")
        # stderr goes to a temporary file, not a pipe: nobody drains a pipe while the
        # tests run, and a full pipe would block moto's request threads on logging.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=self._child_env(),
                # Its own session: a Ctrl-C in the terminal interrupts the tests, whose
                # cleanup then stops the child, instead of also hitting the child with a
                # KeyboardInterrupt traceback mid-request.
                start_new_session=True,
            )
            self._port = self._read_port(self._process)
        except BaseException:
            # A child that never reported its port is in an unknown state: kill it
            # rather than wait for it to notice its closed stdin.
            if self._process is not None:
                self._process.kill()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the child process and release every pipe and file. Idempotent.

        The child is asked to exit by closing its stdin; if it has not exited within
        ``stop_timeout`` it is killed. Either way it is reaped (no zombie) and all pipes
        are closed (no ``ResourceWarning``).
        """
        process, self._process = self._process, None
        self._port = None
        if process is not None:
            try:
                untether(process, timeout=self._stop_timeout)
            finally:
                if process.stdout is not None:
                    process.stdout.close()
        stderr, self._stderr = self._stderr, None
        if stderr is not None:
            stderr.close()

    def __enter__(self) -> MotoServer:
        """Start the server (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server (see :meth:`stop`)."""
        self.stop()

    # -- properties and helpers ------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port moto listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._port is None:
            raise RuntimeError("MotoServer is not running")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """The URL to pass as ``endpoint_url`` / ``AWS_ENDPOINT_URL``, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{_LOOPBACK}:{self.port}"

    def reset(self, timeout: float = 10.0) -> None:
        """Forget all state in moto (buckets, objects, experiments, ...).

        Calls moto's ``POST /moto-api/reset``. Uses ``http.client`` directly rather than
        ``urllib.request`` so that no ``HTTP_PROXY`` environment variable can reroute it.

        Args:
            timeout: Socket timeout for the call, in seconds.

        Raises:
            RuntimeError: If moto does not answer with HTTP 200.
        """
        conn = http.client.HTTPConnection(_LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request("POST", "/moto-api/reset", body=b"")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"moto reset failed: HTTP {response.status} {body!r}")

    def _child_env(self) -> dict[str, str]:
        # ``python -m _infra.aws`` must find this package even when the test
        # process found it only through sys.path tweaks (pytest rootdir, editable installs):
        # put the directory that contains the package first on the child's PYTHONPATH.
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = package_root + (os.pathsep + existing if existing else "")
        # The test process may run with ``-W error``; moto's own deprecation warnings in
        # the child are not the subject under test and must not crash the server.
        env.pop("PYTHONWARNINGS", None)
        return env

    def _read_port(self, process: subprocess.Popen[bytes]) -> int:
        # Read the child's stdout with a deadline. ``readline()`` on the pipe could block
        # forever if the child hangs before printing, so poll the raw fd with a selector.
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self._start_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.startswith(_PORT_LINE_PREFIX):
                        return int(line[len(_PORT_LINE_PREFIX) :].strip())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"moto server did not report its port within {self._start_timeout} s"
                        f"; stderr:\n{self._stderr_tail()}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = process.wait(timeout=self._stop_timeout)
                    raise RuntimeError(
                        f"moto server exited with code {code} before reporting its port"
                        f"; stderr:\n{self._stderr_tail()}"
                    )
                buffer += chunk

    def _stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-limit:]


# --------------------------------------------------------------------------------------
# The child process: patched moto server
# --------------------------------------------------------------------------------------


# Classes whose ``search`` is already bridged, so that patching twice is a no-op.
_PATCHED_SEARCH: set[type] = set()


def patch_moto_sagemaker_search() -> None:
    """Teach moto's SageMaker ``Search`` about ``Parents.ExperimentName``.

    The gap: ``sagemaker.core.analytics.ExperimentAnalytics(experiment_name=X).dataframe()``
    calls ``Search(Resource="ExperimentTrialComponent")`` with the filter
    ``{"Name": "Parents.ExperimentName", "Operator": "Equals", "Value": X}``. moto 5.2.x
    (``SageMakerModelBackend.search`` in ``moto/sagemaker/models.py``) only knows
    ``Parents.TrialName`` and attribute names of its model objects; for
    ``Parents.ExperimentName`` it raises ``ValidationException: Unknown property name``.
    Its results also lack ``Parents`` (the trials and experiments a trial component
    belongs to), from which ``ExperimentAnalytics`` builds its ``Trials`` and
    ``Experiments`` columns.

    The bridge wraps ``search`` for ``Resource="ExperimentTrialComponent"`` only:

    1. it removes the ``Parents.ExperimentName`` filters from the expression and lets
       moto's own ``search`` apply the remaining ones;
    2. it computes each result's parents, i.e. the trials the component was associated
       with by ``AssociateTrialComponent`` (the trials' component lists, plus the
       component's own ``trial_name`` because moto's ``CreateTrial`` silently replaces
       an existing trial and so forgets its components), each paired with its trial's
       experiment;
    3. it keeps the results whose parents satisfy the removed filters (``Equals``,
       ``NotEquals`` or ``Contains`` on any parent's experiment name) and adds
       ``Parents`` to every result.

    Everything else, including moto's other gaps (``Metrics`` in search results holds
    moto's raw metric map instead of AWS's summaries; create calls overwrite existing
    entities instead of failing), is left unchanged.
    Applying the patch twice is a no-op.
    """
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    if SageMakerModelBackend in _PATCHED_SEARCH:
        return
    original: Callable[..., Any] = SageMakerModelBackend.search

    parent_filter_name = "Parents.ExperimentName"

    def parent_filter_matches(experiments: list[str], flt: Mapping[str, Any]) -> bool:
        operator = flt.get("Operator", "Equals")
        value = flt.get("Value")
        if operator == "Equals":
            return value in experiments
        if operator == "NotEquals":
            return value not in experiments
        if operator == "Contains":
            return any(str(value) in name for name in experiments)
        raise ValidationError(message=f"Unsupported operator {operator} for {parent_filter_name}")

    def parent_trials(backend: SageMakerModelBackend, component: str) -> list[str]:
        # Two sources, because moto's CreateTrial silently replaces an existing trial
        # (AWS would refuse), which empties its component list: the second ``Run`` of an
        # experiment re-creates the shared "Default-Run-Group-<experiment>" trial. The
        # component's own ``trial_name`` (set by AssociateTrialComponent) survives that.
        names = [trial.trial_name for trial in backend.trials.values() if component in trial.trial_components]
        own = backend.trial_components[component].trial_name
        if own is not None and own not in names:
            names.append(own)
        return [name for name in names if name in backend.trials]

    def search(self: SageMakerModelBackend, resource: Any = None, search_expression: Any = None) -> Any:
        if resource != "ExperimentTrialComponent":
            return original(self, resource=resource, search_expression=search_expression)
        expression = dict(search_expression or {})
        filters = list(expression.get("Filters") or [])
        parent_filters = [f for f in filters if f.get("Name") == parent_filter_name]
        expression["Filters"] = [f for f in filters if f.get("Name") != parent_filter_name]
        result = original(self, resource=resource, search_expression=expression)

        kept = []
        for entry in result["Results"]:
            component = entry["TrialComponent"]
            experiments = []
            parents = []
            for trial_name in parent_trials(self, component["TrialComponentName"]):
                experiment = self.trials[trial_name].experiment_name
                experiments.append(experiment)
                parents.append({"TrialName": trial_name, "ExperimentName": experiment})
            if all(parent_filter_matches(experiments, f) for f in parent_filters):
                # gen_response_object() builds a fresh dict per call: safe to extend.
                component["Parents"] = parents
                kept.append(entry)
        result["Results"] = kept
        return result

    search.__doc__ = original.__doc__
    _PATCHED_SEARCH.add(SageMakerModelBackend)
    # setattr, not assignment: the patch is deliberate and must not need a type: ignore
    # on a method assignment.
    setattr(SageMakerModelBackend, "search", search)  # noqa: B010


def main() -> None:
    """Run a patched moto server on ``127.0.0.1`` until stdin reaches end-of-file.

    This is what ``python -m _infra.aws`` does; :class:`MotoServer` runs it
    in a child process. Steps: apply :func:`patch_moto_sagemaker_search`, start
    ``moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)``, print
    ``ASYNCTRACK_MOTO_PORT=<port>`` on stdout and flush, then block reading stdin. The
    process exits when stdin is closed (the parent stopped the server, or died) or when it
    is killed.
    """
    # Werkzeug logs one line per request at INFO; nobody reads it and it only costs time.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    patch_moto_sagemaker_search()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=_LOOPBACK, port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    sys.stdout.buffer.write(_PORT_LINE_PREFIX + str(port).encode("ascii") + b"\n")
    sys.stdout.flush()
    # From now on nobody reads our stdout pipe; send any later stdout writes to stderr so
    # a chatty library can never fill the pipe and block a request thread.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Block until the parent closes our stdin (or exits, which closes it as well).
    while sys.stdin.buffer.read(65536):
        pass
    # Exit immediately: moto's state is disposable and a graceful werkzeug shutdown only
    # adds latency (it polls every 0.5 s) and can hang on a stuck request thread.
    sys.stderr.flush()
    os._exit(0)


# --------------------------------------------------------------------------------------
# FaultProxy
# --------------------------------------------------------------------------------------

FaultKind: TypeAlias = Literal["500", "503", "reset", "stall", "truncate", "404"]
"""The faults :class:`FaultProxy` can inject.

* ``"500"``: answer ``500 Internal Server Error`` with an S3 ``InternalError`` XML body,
  without contacting the upstream.
* ``"503"``: answer ``503 Slow Down`` with an S3 ``SlowDown`` XML body, without contacting
  the upstream.
* ``"404"``: answer ``404 Not Found`` (an endpoint the upstream does not have), without
  contacting the upstream; never drawn at random (give it in ``kinds`` or a schedule).
* ``"reset"``: read the request, then close the client connection with a TCP RST
  (``SO_LINGER`` 0), without contacting the upstream.
* ``"stall"``: read the request, then send nothing for ``stall_seconds`` (or until the
  proxy stops) and close the connection; the upstream is not contacted.
* ``"truncate"``: forward the request (the upstream *does* process it), then send the
  response head with the full ``Content-Length`` but only half of the body, and close. A
  response without a body (``HEAD``, 204, 304, ``Content-Length: 0``) cannot be cut in
  its body, so half of its status line is sent instead; either way the client sees an
  incomplete response to a request that took effect.
"""

FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("500", "503", "reset", "stall", "truncate")
_ALL_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

_MAX_LINE: Final = 65536
_MAX_HEADERS: Final = 200
_BUFSIZE: Final = 65536


@dataclasses.dataclass(frozen=True)
class ProxyRequest:
    """What a fault filter sees of a request (the body is not included).

    Attributes:
        method: The HTTP method, e.g. ``"PUT"``.
        target: The request target, e.g. ``"/bucket/key?partNumber=1"``.
        headers: The request headers with lower-cased names (a repeated header keeps its
            last value).
    """

    method: str
    target: str
    headers: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a :class:`FaultProxy`'s counters.

    Attributes:
        requests: Complete requests read from clients.
        forwarded: Requests sent to the upstream (including ``truncate`` faults, whose
            request reaches the upstream).
        faults: Injected faults per kind; every kind is present.
        connections: Client connections accepted.
    """

    requests: int
    forwarded: int
    faults: Mapping[FaultKind, int]
    connections: int

    @property
    def total_faults(self) -> int:
        """The number of injected faults of all kinds."""
        return sum(self.faults.values())


class _ProtocolError(Exception):
    """A peer sent something that is not HTTP/1.x, or closed mid-message."""


class _UpstreamClosedEarly(_ProtocolError):
    """The upstream closed the connection before sending any byte of a response."""


class _SocketReader:
    """Minimal buffered reader over a blocking socket (lines, exact sizes, to EOF).

    ``socket.makefile`` would do, but this keeps ownership of the socket obvious (one
    object to close) and lets the caller tell "no bytes at all" from "cut short".
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> bool:
        data = self._sock.recv(_BUFSIZE)
        if not data:
            return False
        self._buffer += data
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def readline(self) -> bytes:
        """Return one line including its ``\\n``, or what is left at EOF (maybe ``b""``)."""
        start = 0
        while True:
            index = self._buffer.find(b"\n", start)
            if index >= 0:
                line = bytes(self._buffer[: index + 1])
                del self._buffer[: index + 1]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise _ProtocolError("line too long")
            start = len(self._buffer)
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise _ProtocolError(f"connection closed after {len(self._buffer)} of {size} bytes")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _read_headers(reader: _SocketReader) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline()
        if not line.endswith(b"\n"):
            raise _ProtocolError("connection closed inside the header block")
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) >= _MAX_HEADERS:
            raise _ProtocolError("too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _ProtocolError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    found: str | None = None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found


def _is_chunked(headers: Iterable[tuple[str, str]]) -> bool:
    value = _header(headers, "Transfer-Encoding")
    return value is not None and "chunked" in value.lower()


def _content_length(headers: Iterable[tuple[str, str]]) -> int | None:
    value = _header(headers, "Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise _ProtocolError(f"bad Content-Length {value!r}") from None
    if length < 0:
        raise _ProtocolError(f"bad Content-Length {value!r}")
    return length


def _wants_keep_alive(version: str, headers: Iterable[tuple[str, str]]) -> bool:
    connection = (_header(headers, "Connection") or "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _read_chunked(reader: _SocketReader) -> tuple[bytes, bytes]:
    """Read a chunked body; return (raw framing as received, decoded payload)."""
    raw = bytearray()
    payload = bytearray()
    while True:
        size_line = reader.readline()
        if not size_line.endswith(b"\n"):
            raise _ProtocolError("connection closed inside a chunked body")
        raw += size_line
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError(f"bad chunk size line {size_line!r}") from None
        if size == 0:
            # Trailer section: header lines up to an empty line.
            while True:
                line = reader.readline()
                if not line.endswith(b"\n"):
                    raise _ProtocolError("connection closed inside chunked trailers")
                raw += line
                if line in (b"\r\n", b"\n"):
                    return bytes(raw), bytes(payload)
        data = reader.read_exact(size)
        crlf = reader.readline()
        if crlf not in (b"\r\n", b"\n"):
            raise _ProtocolError("missing CRLF after a chunk")
        raw += data + crlf
        payload += data


@dataclasses.dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes  # as framed on the wire (raw chunks when chunked)

    @property
    def keep_alive(self) -> bool:
        return _wants_keep_alive(self.version, self.headers)

    def to_upstream_bytes(self) -> bytes:
        # ``Expect: 100-continue`` was answered by the proxy itself (it needs the whole
        # request before deciding on a fault), so the upstream must not answer it again.
        lines = [f"{self.method} {self.target} {self.version}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers if name.lower() != "expect")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + self.body

    def public(self) -> ProxyRequest:
        return ProxyRequest(
            method=self.method,
            target=self.target,
            headers={name.lower(): value for name, value in self.headers},
        )


def _read_request(reader: _SocketReader, send_continue: Callable[[], None]) -> _Request | None:
    """Read one request; ``None`` if the client closed the connection between requests."""
    line = reader.readline()
    # Tolerate stray empty lines between keep-alive requests (RFC 9112, section 2.2).
    while line in (b"\r\n", b"\n"):
        line = reader.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise _ProtocolError("connection closed inside the request line")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _ProtocolError(f"malformed request line {line!r}")
    method, target, version = parts
    headers = _read_headers(reader)
    expect = (_header(headers, "Expect") or "").lower()
    if expect == "100-continue" and version != "HTTP/1.0":
        send_continue()
    if _is_chunked(headers):
        body, _ = _read_chunked(reader)
    else:
        body = reader.read_exact(_content_length(headers) or 0)
    return _Request(method, target, version, headers, body)


@dataclasses.dataclass
class _Response:
    status_line: bytes
    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # decoded from any chunked framing
    has_body: bool  # False for HEAD / 204 / 304: no body bytes follow the head
    reframe: bool  # True if the upstream did not send a usable Content-Length
    upstream_keep_alive: bool

    def head_bytes(self, content_length: int | None, keep_alive: bool) -> bytes:
        """The response head for the client.

        ``Connection`` and ``Keep-Alive`` are hop-by-hop headers: they describe the
        upstream connection (moto's werkzeug server closes every connection), not the
        client's, which stays open as long as the client wants. That keeps client-side
        connection reuse, which real AWS endpoints allow, testable.
        """
        lines = [self.status_line.decode("latin-1").rstrip("\r\n") + "\r\n"]
        dropped = {"connection", "keep-alive"}
        if content_length is not None:
            dropped |= {"content-length", "transfer-encoding"}
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers if name.lower() not in dropped)
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}\r\n")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        return "".join(lines).encode("latin-1")

    def to_client_bytes(self, keep_alive: bool) -> bytes:
        # A chunked or read-to-EOF body was fully buffered, so it is re-sent with a
        # Content-Length; that keeps the client's connection reusable.
        if self.has_body and self.reframe:
            return self.head_bytes(len(self.body), keep_alive) + self.body
        return self.head_bytes(None, keep_alive) + self.body

    def truncated_bytes(self) -> bytes:
        if self.has_body and self.body:
            head = self.head_bytes(len(self.body), keep_alive=True)
            return head + self.body[: len(self.body) // 2]
        # No body to cut: cut the status line, so the response is unusable either way.
        return self.status_line[: len(self.status_line) // 2]


def _read_response(reader: _SocketReader, method: str) -> _Response:
    while True:
        status_line = reader.readline()
        if not status_line:
            raise _UpstreamClosedEarly("upstream closed before responding")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(f"malformed status line {status_line!r}")
        version, status = parts[0], int(parts[1])
        headers = _read_headers(reader)
        # Skip interim responses (e.g. a stray 100 Continue); 101 would switch protocols,
        # which no AWS client does.
        if 100 <= status < 200 and status != 101:
            continue
        break
    keep_alive = _wants_keep_alive(version, headers)
    has_body = method.upper() != "HEAD" and status not in (204, 304) and status >= 200
    reframe = False
    if not has_body:
        body = b""
    elif _is_chunked(headers):
        _, body = _read_chunked(reader)
        reframe = True
    else:
        length = _content_length(headers)
        if length is None:
            body = reader.read_to_eof()
            keep_alive = False
            reframe = True
        else:
            body = reader.read_exact(length)
    return _Response(status_line, version, status, headers, body, has_body, reframe, keep_alive)


def _error_response(status: int, reason: str, code: str, message: str, keep_alive: bool) -> bytes:
    request_id = os.urandom(8).hex().upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>asynctrack-fault-proxy</HostId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    ).encode("ascii")
    return head + body


_CANNED_FAULTS: Final[Mapping[str, tuple[int, str, str, str]]] = {
    "500": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "404": (404, "Not Found", "NotFound", "No such endpoint."),
}


class _Upstream:
    """One connection to the upstream server, reused for a client connection's requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _SocketReader(sock)
        self.used = False


class FaultProxy:
    """An HTTP/1.1 proxy on ``127.0.0.1`` that forwards to an upstream and injects faults.

    Clients use :attr:`endpoint_url` instead of the upstream's URL (it is a reverse
    proxy: requests are sent to it exactly as they would be to the upstream, and it
    forwards them unchanged, ``Host`` header included, so SigV4 signatures stay valid).

    Each client connection is served by its own thread and gets its own upstream
    connection, so keep-alive works end to end and a stalled connection never holds up
    the others. Request bodies framed by ``Content-Length`` or ``Transfer-Encoding:
    chunked`` (including S3's ``aws-chunked`` uploads) are read completely and forwarded
    byte for byte; ``Expect: 100-continue`` is answered by the proxy. Responses are read
    completely and relayed (a chunked response is re-sent with a ``Content-Length``).

    Response headers are relayed as the upstream sent them, apart from the hop-by-hop
    ``Connection``/``Keep-Alive`` headers and the framing headers of a re-framed body.
    So moto's duplicate ``Server`` header (werkzeug's plus moto's ``server:
    amazon.com``) passes through; aiohttp's strict parser, active in Python's dev mode
    (``-X dev``), rejects it, through the proxy or not.

    Which requests get a fault, in order of precedence:

    1. requests rejected by the filter (:meth:`set_filter`) never get one and do not
       consume the schedule;
    2. the schedule (:meth:`schedule`): the next request takes the next entry, where
       ``None`` means "forward this one";
    3. otherwise, with probability ``probability``, a kind drawn uniformly from ``kinds``
       by a ``random.Random(seed)`` (deterministic for a given order of requests).

    All public methods are thread-safe and may be called while the proxy runs, from any
    thread or event loop (the proxy runs on its own threads).

    Example::

        with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
            proxy.schedule(["503", None, "reset"])
            s3 = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)

    Args:
        upstream_url: Where to forward, e.g. ``MotoServer.endpoint_url``; ``http`` only.
        probability: Chance in [0, 1] that an unscheduled request gets a random fault.
        kinds: The kinds random faults are drawn from.
        seed: Seed for the fault generator.
        stall_seconds: How long a ``"stall"`` fault keeps a connection silent (it ends
            earlier if the proxy stops).
        upstream_timeout: Socket timeout for connecting to and reading from the upstream.
        stop_timeout: Seconds :meth:`stop` waits for the proxy's threads to finish.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        probability: float = 0.0,
        kinds: Sequence[FaultKind] = FAULT_KINDS,
        seed: int = 0,
        stall_seconds: float = 30.0,
        upstream_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or parsed.hostname is None:
            raise ValueError(f"upstream_url must be an http:// URL, got {upstream_url!r}")
        self._upstream_address = (parsed.hostname, parsed.port or 80)
        self._upstream_timeout = upstream_timeout
        self._stop_timeout = stop_timeout

        # One lock guards the fault configuration, the counters and the socket registry.
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._probability = 0.0
        self._kinds: tuple[FaultKind, ...] = FAULT_KINDS
        self._schedule: collections.deque[FaultKind | None] = collections.deque()
        self._filter: Callable[[ProxyRequest], bool] | None = None
        self._stall_seconds = 0.0
        self._requests = 0
        self._forwarded = 0
        self._connections = 0
        self._faults: dict[FaultKind, int] = dict.fromkeys(_ALL_KINDS, 0)
        self.set_probability(probability, kinds)
        self.stall_seconds = stall_seconds

        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind to ``127.0.0.1`` on a free port and start accepting connections.

        Returns:
            This proxy.

        Raises:
            RuntimeError: If the proxy was already started (a proxy is single-use).
        """
        if self._listener is not None or self._stopping.is_set():
            raise RuntimeError("FaultProxy can only be started once")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((_LOOPBACK, 0))
            listener.listen(128)
            # Non-blocking + a wake-up socket pair: stop() can interrupt the accept loop
            # immediately and portably, without polling.
            listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            name=f"FaultProxy-accept-{self._port}",
            daemon=True,
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end every connection (including stalled ones), join threads.

        Idempotent. Waits at most about ``stop_timeout`` seconds in total.
        """
        if self._listener is None or self._stopping.is_set():
            self._stopping.set()
            return
        self._stopping.set()
        deadline = time.monotonic() + self._stop_timeout
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        # Wake every thread blocked in recv() on a client or upstream socket. shutdown()
        # (not close()) under the lock: the owning thread still closes its own sockets,
        # so a file descriptor is never closed while another thread uses it.
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for own in (self._listener, self._wake_r, self._wake_w):
            if own is not None:
                own.close()
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            _LOG.warning("FaultProxy threads still running after stop: %s", alive)

    def __enter__(self) -> FaultProxy:
        """Start the proxy (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy (see :meth:`stop`)."""
        self.stop()

    # -- configuration ---------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The proxy's URL, e.g. ``http://127.0.0.1:54322``.

        Raises:
            RuntimeError: If the proxy is not started.
        """
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{_LOOPBACK}:{self._port}"

    @property
    def stall_seconds(self) -> float:
        """How long a ``"stall"`` fault keeps its connection silent (settable)."""
        with self._lock:
            return self._stall_seconds

    @stall_seconds.setter
    def stall_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("stall_seconds must be >= 0")
        with self._lock:
            self._stall_seconds = seconds

    def set_probability(self, probability: float, kinds: Sequence[FaultKind] | None = None) -> None:
        """Change the chance of a random fault and, optionally, the kinds drawn from.

        Args:
            probability: In [0, 1]; 0 disables random faults.
            kinds: Kinds to draw from; ``None`` keeps the current ones.

        Raises:
            ValueError: On a probability outside [0, 1] or an unknown or empty kind list.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        new_kinds = None if kinds is None else tuple(_check_kind(kind) for kind in kinds)
        if new_kinds is not None and not new_kinds:
            raise ValueError("kinds must not be empty")
        with self._lock:
            self._probability = probability
            if new_kinds is not None:
                self._kinds = new_kinds

    def schedule(self, kinds: Iterable[FaultKind | None]) -> None:
        """Append entries to the fault schedule.

        Each entry applies to one upcoming request (that passes the filter), in order:
        a kind injects that fault, ``None`` forwards the request untouched. Scheduled
        entries take precedence over random faults.

        Args:
            kinds: Entries to append, e.g. ``["503", None, "reset"]``.

        Raises:
            ValueError: On an unknown kind (nothing is appended then).
        """
        entries = [None if kind is None else _check_kind(kind) for kind in kinds]
        with self._lock:
            self._schedule.extend(entries)

    def clear_faults(self) -> None:
        """Drop the schedule and disable random faults (the filter is kept)."""
        with self._lock:
            self._schedule.clear()
            self._probability = 0.0

    @property
    def pending(self) -> int:
        """The number of schedule entries not yet consumed."""
        with self._lock:
            return len(self._schedule)

    def set_filter(self, predicate: Callable[[ProxyRequest], bool] | None) -> None:
        """Only let requests for which ``predicate`` is true get faults.

        Args:
            predicate: Called on the proxy's threads with each request (without body);
                ``None`` removes the filter. It must be thread-safe and must not raise
                (a raising filter counts as ``False``).
        """
        with self._lock:
            self._filter = predicate

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ProxyStats(
                requests=self._requests,
                forwarded=self._forwarded,
                faults=dict(self._faults),
                connections=self._connections,
            )

    def reset_stats(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._requests = self._forwarded = self._connections = 0
            self._faults = dict.fromkeys(_ALL_KINDS, 0)

    # -- internals -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener, wake = self._listener, self._wake_r
        assert listener is not None and wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is wake or self._stopping.is_set():
                        return
                    try:
                        client, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue  # another wake-up raced us to it; harmless
                    except OSError:
                        if self._stopping.is_set():
                            return
                        raise
                    self._spawn(client)

    def _spawn(self, client: socket.socket) -> None:
        # Accepted sockets may inherit non-blocking mode from the listener on some
        # platforms; connection threads want plain blocking I/O.
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_client,
            args=(client,),
            name=f"FaultProxy-conn-{self._port}",
            daemon=True,
        )
        with self._lock:
            if self._stopping.is_set():
                client.close()
                return
            self._connections += 1
            self._sockets.add(client)
            self._threads.add(thread)
        thread.start()

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _decide(self, request: _Request) -> FaultKind | None:
        with self._lock:
            self._requests += 1
            predicate = self._filter
        if predicate is not None:
            try:
                eligible = bool(predicate(request.public()))
            except Exception:
                _LOG.exception("FaultProxy filter raised; treating the request as not eligible")
                eligible = False
            if not eligible:
                return None
        with self._lock:
            if self._schedule:
                kind = self._schedule.popleft()
            elif self._probability > 0.0 and self._rng.random() < self._probability:
                kind = self._rng.choice(self._kinds)
            else:
                kind = None
            if kind is not None:
                self._faults[kind] += 1
            return kind

    def _serve_client(self, client: socket.socket) -> None:
        reader = _SocketReader(client)
        upstream: _Upstream | None = None
        try:
            while not self._stopping.is_set():
                request = _read_request(reader, lambda: client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"))
                if request is None:
                    return
                fault = self._decide(request)
                if fault == "reset":
                    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fault == "stall":
                    self._stopping.wait(self.stall_seconds)
                    return
                if fault in _CANNED_FAULTS:
                    client.sendall(_error_response(*_CANNED_FAULTS[fault], request.keep_alive))
                    if not request.keep_alive:
                        return
                    continue
                with self._lock:
                    self._forwarded += 1
                try:
                    response, upstream = self._forward(request, upstream)
                except (OSError, _ProtocolError) as exc:
                    if self._stopping.is_set():
                        return
                    _LOG.debug("FaultProxy upstream failure: %r", exc)
                    client.sendall(_bad_gateway(exc))
                    return
                if fault == "truncate":
                    client.sendall(response.truncated_bytes())
                    return
                client.sendall(response.to_client_bytes(request.keep_alive))
                if not request.keep_alive:
                    return
        except (OSError, _ProtocolError) as exc:
            # The client went away or sent garbage: there is nobody to report it to.
            _LOG.debug("FaultProxy client connection ended: %r", exc)
        finally:
            if upstream is not None:
                self._release(upstream.sock)
            # After SO_LINGER 0 (the "reset" fault) this close() sends the RST.
            self._release(client)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _connect_upstream(self) -> _Upstream:
        sock = socket.create_connection(self._upstream_address, timeout=self._upstream_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            stopping = self._stopping.is_set()
            if not stopping:
                self._sockets.add(sock)
        if stopping:
            sock.close()
            raise OSError("FaultProxy is stopping")
        return _Upstream(sock)

    def _forward(self, request: _Request, upstream: _Upstream | None) -> tuple[_Response, _Upstream | None]:
        payload = request.to_upstream_bytes()
        while True:
            if upstream is None:
                upstream = self._connect_upstream()
            reused = upstream.used
            upstream.used = True
            try:
                upstream.sock.sendall(payload)
                response = _read_response(upstream.reader, request.method)
            except (OSError, _UpstreamClosedEarly):
                self._release(upstream.sock)
                # A reused keep-alive connection may have been closed by the upstream
                # while idle; then (and only then, as nothing was received) retry once on
                # a fresh connection, like HTTP client pools do.
                if reused and not self._stopping.is_set():
                    upstream = None
                    continue
                raise
            except _ProtocolError:
                self._release(upstream.sock)
                raise
            if not response.upstream_keep_alive:
                self._release(upstream.sock)
                return response, None
            return response, upstream


def _bad_gateway(exc: BaseException) -> bytes:
    body = f"FaultProxy could not reach the upstream: {exc!r}\n".encode()
    return (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
        + body
    )


def _check_kind(kind: str) -> FaultKind:
    for known in _ALL_KINDS:
        if kind == known:
            return known
    raise ValueError(f"unknown fault kind {kind!r}; expected one of {_ALL_KINDS}")


if __name__ == "__main__":
    main()
