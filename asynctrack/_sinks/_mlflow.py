"""Run parameters and metrics in MLflow (a parameter sink).

``MLflowParameters`` keeps one MLflow run per asynctrack run: the experiment
name is the MLflow experiment, the run name the MLflow run name, and the tag
``asynctrack.run_key`` (a hash of both names) finds the run again, on the next
flush or from a new tracker, so a run is not duplicated (trackers that create it
at the same moment keep one at their next write, see ``_settle``). The run is
RUNNING while a tracker writes and FINISHED when it closes. At every flush it
writes, in ``log_batch`` calls:

    parameters   the hyperparameters (model name, temperature, ...), once each:
                 MLflow never changes a parameter, so a value that changes later
                 goes to the tag ``asynctrack.param.<name>`` instead
    metrics      events per kind, LLM calls, errors, tokens in and out, latency
                 p50 / p95 / max per group, with a step that grows by one per flush
    tags         ``asynctrack.events_uri`` (where the events are), the names, and
                 the run's description (``mlflow.note.content``) with the link

MLflow's client is synchronous. Its calls run one at a time on a daemon thread of
their own and the worker's loop awaits them under one deadline, retrying
connection errors and 5xx answers; MLflow's own HTTP retries are off on that
thread and each request's timeout is what is left of the deadline (``_within``),
so a call ends by the deadline too. A refused connection (nothing listens) fails
the write at once. A call that still outlives the deadline (a name that does not
resolve) is left to finish on that thread (it cannot be interrupted), and later
writes fail at once until it returns; after a write that ran out of time, the
next ones fail at once for one deadline. So a hanging tracking server never holds
a flush longer than the deadline, nor the close or the process at exit.

With ``traces=True`` (the default) each LangChain root run also becomes an MLflow
trace linked to the run (``_mlflow_traces``), logged on the same thread soon after
the root run ends; a server without trace support turns them off by itself, said
once and counted.

MLflow's limits are checked before the call (``_mlflow_plan``); every change is
logged once and counted in ``adjustments``. Retries use the sinks' shared loop
(``_retry``): backoff with full jitter, every attempt bounded by the deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.util
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .._errors import PermanentSinkError, SinkError
from ._base import ParameterValue, RunInfo, RunSummary
from ._mlflow_plan import (
    CHANGED_PARAMETER_TAG,
    NOTE_TAG,
    RUN_KEY_TAG,
    MLflowLimits,
    batches,
    mlflow_key,
    plan_write,
    run_key,
)
from ._retry import RetryExhausted, retry

if TYPE_CHECKING:
    from .._export._protocol import LineExporter
    from ._mlflow_traces import TraceSpan

__all__ = [
    "RUN_KEY_TAG",
    "MLflowLimits",
    "MLflowParameters",
    "batches",
    "mlflow_key",
    "plan_write",
    "run_key",
]

logger = logging.getLogger("asynctrack")

T = TypeVar("T")

# MLflow error codes worth another attempt: 5xx answers and connection errors
# (MLflow wraps those as INTERNAL_ERROR), throttling, a busy database.
_RETRYABLE: Final = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
    }
)
_ALREADY_EXISTS: Final = "RESOURCE_ALREADY_EXISTS"
# Another tracker wrote the same row at the same moment (SQL stores answer
# BAD_REQUEST): the next attempt finds it there and skips it.
_CONFLICT: Final = ("IntegrityError", "UNIQUE constraint failed", "Duplicate entry", "duplicate key value")
# The run was deleted (a twin removed by the tracker that kept the other, or by a
# person): the next attempt searches again and writes to the run that is left.
_DELETED: Final = "must be in the 'active' state"
_SET_UP_TIMEOUT: Final = 120.0  # importing MLflow and opening the store, once per sink
_MIN_REQUEST_TIMEOUT: Final = 0.05  # seconds: a request made as the deadline passes fails at once


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, SinkError):
        return False  # ours, said already
    if isinstance(exc, OSError | TimeoutError):
        return True
    try:
        import requests

        if isinstance(exc, requests.RequestException):
            return True
    except ImportError:  # pragma: no cover - mlflow-skinny depends on requests
        pass
    text = str(exc)
    return _error_code(exc) in _RETRYABLE or _DELETED in text or any(c in text for c in _CONFLICT)


def _refused(exc: BaseException) -> bool:
    """The connection was refused (nothing listens there): said at once, not retried
    until the deadline. MLflow wraps it: ``MlflowException`` from requests'
    ``ConnectionError`` from urllib3's errors from ``ConnectionRefusedError``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _failure(exc: BaseException) -> str:
    """A failed call in words (a refused connection without MLflow's wrapping)."""
    return "connection refused: nothing listens there" if _refused(exc) else f"{type(exc).__name__}: {exc}"


class _RequestBound(threading.local):
    """When the sink's call running on this thread must end (``time.monotonic()``)."""

    end: float | None = None


_request_bound: Final = _RequestBound()
_bound_lock: Final = threading.Lock()
_bound_installed: list[bool] = []  # one item once installed in this process


def _within(end: float, call: Callable[[], T]) -> T:
    """``call()`` with MLflow's HTTP requests on this thread bounded by ``end``: no
    retries of MLflow's own (the sink's loop retries) and a timeout of what is left."""
    previous, _request_bound.end = _request_bound.end, end
    try:
        return call()
    finally:
        _request_bound.end = previous


def _bound_requests() -> None:
    """Once per process: MLflow's requests made within ``_within`` get their bounds.

    MLflow takes both per request (``rest_utils.http_request(max_retries=, timeout=)``)
    but its client passes neither: they come from ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
    (7, with backoff: a refused connection takes 4 minutes) and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s per attempt), process-wide settings that the
    application's own MLflow calls use too. So they are given where every request of
    ``http_request`` goes through, for the sink's thread only, while it runs a call of
    the sink: other threads' requests pass unchanged. An MLflow without that function
    keeps its settings (docs/MLFLOW.md says how to bound them).
    """
    with _bound_lock:
        if _bound_installed:
            return
        _bound_installed.append(True)
        from mlflow.utils import rest_utils

        send = getattr(rest_utils, "_get_http_response_with_retries", None)
        if send is None:  # pragma: no cover - MLflow 3.0-3.18 have it
            return

        @functools.wraps(send)
        def bounded(method: str, url: str, max_retries: int, *args: Any, **kwargs: Any) -> Any:
            end = _request_bound.end
            if end is not None:
                max_retries = 0
                left = max(end - time.monotonic(), _MIN_REQUEST_TIMEOUT)
                timeout = kwargs.get("timeout")
                if not isinstance(timeout, int | float) or timeout > left:
                    kwargs["timeout"] = left
            return send(method, url, max_retries, *args, **kwargs)

        # Looked up at each call by ``http_request``: the one place to give per-request bounds.
        # Private (not re-exported, hence the ignore): see the docstring.
        rest_utils._get_http_response_with_retries = bounded  # type: ignore[attr-defined]  # noqa: SLF001


# What a server without MLflow 3's trace API answers (MLflow 2.x: 404; stores that
# keep no traces: NOT_IMPLEMENTED).
_NO_TRACE_API: Final = ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED")


def _no_trace_api(exc: BaseException) -> bool:
    if isinstance(exc, NotImplementedError):
        return True
    # MLflow's client says "failed with error code 404 != 200" for an answer without its JSON.
    return _error_code(exc) in _NO_TRACE_API or "error code 404" in str(exc)


# The trace info tag that says where a trace's spans are.
_SPANS_LOCATION: Final = "mlflow.trace.spansLocation"


def _no_span_api(exc: BaseException) -> bool:
    """``log_spans`` is refused for good: MLflow's client finds the server older than 3.4
    (``NotImplementedError``), or the server has no ``/v1/traces`` (404) or a store that
    keeps no spans (501, "REST OTLP span logging is not supported")."""
    text = str(exc)
    return _no_trace_api(exc) or "error code 501" in text or "span logging is not supported" in text


def _artifacts_beside(uri: str | None) -> str | None:
    """Where a new experiment's artifacts (traces' data on the artifact path) go for a SQLite store: beside
    the database, not in ``./mlruns`` of whatever directory the worker runs in (MLflow's
    default). ``None``: the store's own default."""
    if uri is None or not uri.startswith("sqlite:///"):
        return None
    database = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return os.path.join(os.path.dirname(os.path.abspath(database)), "mlartifacts")


_THREAD_NAME: Final = "asynctrack-mlflow"


class _QuietPluginHeaders(logging.Filter):
    """Drops one warning per request that ``sagemaker-mlflow`` causes on our thread.

    Its request-header provider parses the process-wide tracking URI as an ARN on
    every request to any server; for a URI that is not one it fails, and MLflow
    logs the failure (and sends the request without the header, which only an
    ARN needs). Other threads' records pass: they are the application's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.threadName == _THREAD_NAME
            and str(record.msg).startswith("Encountered unexpected error during resolving request headers")
        )


_quiet_plugin_headers: Final = _QuietPluginHeaders()


class _CallThread:
    """Runs blocking calls one at a time on a daemon thread; awaited from a loop.

    A daemon thread, not an executor: ``concurrent.futures`` joins its threads at
    interpreter exit, so one MLflow call stuck on a dead server would hold the
    process open. A call whose caller stopped waiting before it started is skipped.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Any, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()
        self._running: Any = None  # the future of the call running now
        self._abandoned = False  # its caller stopped waiting for it
        self.busy_since: float | None = None

    def busy_for(self) -> float:
        """Seconds the current call has run (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def stuck_for(self, deadline: float) -> float:
        """Seconds the current call has run if it is overdue, else 0.

        Overdue: its caller gave up waiting for it, or it ran past ``deadline``
        (every caller bounds its attempts by the deadline, so such a call hangs in
        one request). A call that is merely busy (a batch of traces) is waited for.
        """
        with self._state:
            busy = self.busy_for()
            return busy if self._running is not None and (self._abandoned or busy > deadline) else 0.0

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread; a cancelled await leaves it running there."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, loop, future))
        try:
            return await future
        except asyncio.CancelledError:
            self.give_up(future)
            raise

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the thread; for callers on a thread, not a loop (the traces)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put((fn, None, future))
        return future

    def give_up(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
        """Nobody waits for ``future`` any more: skipped if not started, overdue if running."""
        future.cancel()
        with self._state:
            if self._running is future:
                self._abandoned = True

    def queued(self) -> int:
        """Calls waiting behind the current one."""
        return self._calls.qsize()

    def _put(self, item: tuple[Callable[[], Any], Any, Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()
        self._calls.put(item)

    def stop(self) -> None:
        """Let the thread end after the call it runs, if any (never waits)."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None

    def _main(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, loop, future = item
            with self._state:
                if future.cancelled():  # its caller gave up before it started
                    continue
                self._running, self._abandoned = future, False
                self.busy_since = time.monotonic()
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except Exception as exc:
                outcome = (False, exc)
            finally:
                with self._state:
                    self._running, self._abandoned, self.busy_since = None, False, None
            if loop is None:
                _resolve(future, outcome)
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[Any] | concurrent.futures.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # cancelled: the caller gave up while the call ran
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


@dataclasses.dataclass(slots=True)
class _Run:
    """What the sink knows of one MLflow run it writes to."""

    run_id: str
    experiment_id: str
    step: int
    parameters: dict[str, str]
    tags: dict[str, str]
    settled: bool  # False: a twin made by a racing tracker may still show up
    created: bool  # by this sink (so this sink deletes it if a twin wins)
    checks: int = 0


class MLflowParameters:
    """Writes a tracker's run parameters and metrics to MLflow.

    Pass it as ``AsyncTracker(..., parameter_sinks=[MLflowParameters()])``. It
    needs the ``mlflow`` extra (``pip install 'asynctrack[mlflow]'``).

    Args:
        tracking_uri: a local ``sqlite:///mlflow.db`` or directory, an
            ``http(s)://`` tracking server, or a SageMaker managed MLflow ARN
            (``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``,
            signed with the standard AWS credentials by the ``sagemaker-mlflow``
            plugin). Default: ``MLFLOW_TRACKING_URI``, else MLflow's default.
        tags: more tags for every run (MLflow's key rules applied).
        deadline: seconds one write may take, retries included; past it the
            flush reports the failure.
        traces: also log each LangChain root run's span tree as an MLflow trace,
            linked to the run (where the tracking server takes traces).

    Raises:
        ValueError: a deadline that is not a positive number.
        ImportError: MLflow is not installed.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        deadline: float = 30.0,
        traces: bool = True,
    ) -> None:
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0:
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("MLflowParameters needs MLflow: pip install 'asynctrack[mlflow]'")
        uri = os.fspath(tracking_uri) if tracking_uri is not None else None
        if uri is not None and "://" not in uri and not uri.startswith(("arn:", "file:")):
            # A bare directory: absolute now, so a worker with another cwd finds it.
            uri = os.path.abspath(uri)
        self._uri = uri
        self._tags = dict(tags or {})
        self._deadline = float(deadline)
        self._traces = bool(traces)
        self.adjustments = 0  # keys renamed, values cut, metrics skipped to fit MLflow
        self._init_runtime()

    def _init_runtime(self) -> None:
        # Created on first use on the worker: nothing here holds a thread, a loop
        # or a client, so the sink pickles (for a worker in another process).
        self._pid = os.getpid()
        self._caller: _CallThread | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._limits: MLflowLimits | None = None
        self._experiments: dict[str, str] = {}
        self._runs: dict[str, _Run] = {}
        self._noted: set[str] = set()
        #: The last write ran out of time: when (``time.monotonic()``) and why.
        self._timed_out: tuple[float, str] | None = None
        #: The tracking server answered that it has no trace API: no more trace calls.
        self.traces_unsupported = False
        #: The tracking server takes no ``log_spans``: each trace's spans go as its data artifact.
        self.spans_as_artifacts = False

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self._uri, "tags": self._tags, "deadline": self._deadline, "traces": self._traces}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._uri = state["uri"]
        self._tags = state["tags"]
        self._deadline = state["deadline"]
        self._traces = state.get("traces", True)
        self.adjustments = 0
        self._init_runtime()

    @property
    def tracking_uri(self) -> str | None:
        """The tracking URI given (``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default)."""
        return self._uri

    @property
    def deadline(self) -> float:
        """Seconds one write may take, retries included."""
        return self._deadline

    @property
    def traces(self) -> bool:
        """Whether root runs are also logged as MLflow traces."""
        return self._traces

    def __repr__(self) -> str:
        return f"MLflowParameters(tracking_uri={self._uri!r})"

    # -- the ExportingSink protocol: the traces ------------------------------------------

    def line_exporter(self, run: RunInfo) -> LineExporter | None:
        """The exporter that turns ``run``'s lines into MLflow traces (``None``: ``traces=False``)."""
        if not self._traces:
            return None
        from ._mlflow_traces import MLflowTraces

        return MLflowTraces(self, run)

    def submit_traces(
        self, run: RunInfo, traces: list[list[TraceSpan]], *, give_up: float | None = None
    ) -> concurrent.futures.Future[list[str | None]]:
        """Log ``traces`` on the sink's thread, after the calls queued before them.

        Args:
            run: the run the traces are linked to.
            traces: each trace's spans, its root last.
            give_up: when retries stop (``time.monotonic()``); default: the deadline
                from when the call starts.

        Returns:
            A future of one outcome per trace: ``None`` (logged) or the error text.
        """
        if self._pid != os.getpid():
            self._init_runtime()
        caller = self._caller = self._caller or _CallThread(_THREAD_NAME)

        def log() -> list[str | None]:
            end = time.monotonic() + self._deadline
            end = end if give_up is None else min(end, give_up)
            if (timed_out := self._timed_out_lately()) is not None:  # it would wait as long
                return [f"not sent: the last write {timed_out[1]}"] * len(traces)
            return _within(end, lambda: self._log_traces(run, traces, end))

        return caller.submit(log)

    def overdue(self) -> float:
        """Seconds the sink's current call has run past its deadline or its caller's
        wait (0: none): whoever waits behind it stops waiting."""
        return 0.0 if self._caller is None else self._caller.stuck_for(self._deadline)

    def _timed_out_lately(self) -> tuple[float, str] | None:
        """When and why the last write ran out of time, if it did within one deadline."""
        timed_out = self._timed_out
        return (
            timed_out if timed_out is not None and time.monotonic() - timed_out[0] < self._deadline else None
        )

    def give_up_on(self, future: concurrent.futures.Future[Any]) -> None:
        """Nobody waits for ``future`` (from ``submit_traces``) any more: later writes
        fail at once while it runs; not started, it never does."""
        if self._caller is not None:
            self._caller.give_up(future)

    # -- the ParametersSink and RunSummarySink protocols ---------------------------------

    async def write_parameters(self, run: RunInfo, parameters: Mapping[str, ParameterValue]) -> None:
        """Record parameters only (a plain mapping); a ``RunSummary`` keeps its metrics."""
        if isinstance(parameters, RunSummary):
            await self.write_summary(run, parameters)
        else:
            await self.write_summary(run, RunSummary(hyperparameters=parameters, metrics={}, flat=parameters))

    async def write_summary(self, run: RunInfo, summary: RunSummary) -> None:
        """Make sure the run exists, then log its parameters, metrics (a new step) and tags.

        Returns once MLflow has them. Raises ``SinkError`` when the deadline passes
        or MLflow refuses; the engine counts it and ``flush()`` reports it.
        """
        if self._pid != os.getpid():
            # A forked child: the parent's thread does not exist here and its client's
            # connections are the parent's. Start afresh (the run is found again).
            self._init_runtime()
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop  # a lock serves one loop
        async with self._lock:  # in order: the step of each write follows the last
            began = time.monotonic()
            caller = self._caller = self._caller or _CallThread(_THREAD_NAME)
            if (timed_out := self._timed_out_lately()) is not None:
                # The server did not answer the last write: the next write (the close's,
                # right after a failed flush) would wait as long for nothing.
                raise SinkError(
                    self._where(),
                    f"the last write, {time.monotonic() - timed_out[0]:.0f} s ago, {timed_out[1]}; "
                    f"not sent again within {self._deadline:g} s of it",
                )
            stuck = caller.stuck_for(self._deadline)
            if stuck:
                raise SinkError(
                    self._where(),
                    f"an earlier MLflow call has not returned after {stuck:.0f} s; "
                    "not sending another until it does",
                )
            # The deadline runs from the write's start, waits behind the sink's other calls
            # (a trace batch) included; only MLflow's import and store set-up are apart.
            set_up = await self._set_up(caller) if self._client is None else 0.0
            end = began + set_up + self._deadline

            def send() -> None:
                try:
                    _within(end, lambda: self._send(run, summary))
                except Exception:
                    if time.monotonic() >= end:  # marked here: the calls queued behind it fail at once
                        self._timed_out = (time.monotonic(), f"gave up after {self._deadline:g} s (deadline)")
                    raise

            try:
                await retry(
                    lambda: caller.call(send),
                    deadline=max(end - time.monotonic(), 0.0),
                    retryable=lambda exc: _retryable(exc) and not _refused(exc),
                    first_delay=0.2,
                )
            except RetryExhausted as exc:
                reason = f"gave up after {self._deadline:g} s (deadline)"
                self._timed_out = (time.monotonic(), reason)
                raise SinkError(self._where(), reason) from exc
            except SinkError:
                raise
            except Exception as exc:
                if _refused(exc):
                    raise SinkError(self._where(), _failure(exc)) from exc
                raise PermanentSinkError(self._where(), f"{type(exc).__name__}: {exc}") from exc
            self._timed_out = None

    async def _set_up(self, caller: _CallThread) -> float:
        """Import MLflow and open the store, outside the deadline of the first write.

        Importing MLflow takes 1.5-4 s (more on a loaded machine) and a new SQLite
        store runs its migrations; neither talks to a server, so neither should
        use up the deadline meant for one. They are bounded apart: returns the seconds
        they took on the sink's thread (not the wait behind its other calls).
        """

        def timed() -> float:
            started = time.monotonic()
            self._get_client()
            return time.monotonic() - started

        try:
            async with asyncio.timeout(_SET_UP_TIMEOUT):
                return await caller.call(timed)
        except TimeoutError as exc:
            raise SinkError(self._where(), f"MLflow not set up after {_SET_UP_TIMEOUT:g} s") from exc
        except Exception as exc:  # an unknown URI scheme, a store that cannot open: retrying won't help
            raise PermanentSinkError(self._where(), f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Mark the runs written to as finished (bounded by the deadline); stop the thread."""
        caller, self._caller = self._caller, None
        if caller is None:
            return
        try:
            if self._runs and not caller.busy_for():
                limit = min(self._deadline, 10.0)
                async with asyncio.timeout(limit):
                    await caller.call(lambda: _within(time.monotonic() + limit, self._finish_runs))
        except Exception as exc:  # the runs stay RUNNING in the UI; nothing is lost
            logger.warning("asynctrack (MLflow): runs not marked finished: %s", exc)
        finally:
            caller.stop()

    # -- worker side ---------------------------------------------------------------------

    def _where(self) -> str:
        return f"MLflow ({self._uri or os.environ.get('MLFLOW_TRACKING_URI') or 'default tracking URI'})"

    def _note(self, message: str) -> None:
        if message not in self._noted and len(self._noted) < 1000:
            self._noted.add(message)
            logger.warning("asynctrack (MLflow): %s", message)

    def _get_client(self) -> Any:
        """The ``MlflowClient`` (on the call thread: importing MLflow takes a second)."""
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            _bound_requests()
            uri = self._uri or mlflow.get_tracking_uri()
            if uri.startswith("arn:") and mlflow.get_tracking_uri() != uri:
                # sagemaker-mlflow signs requests for the process-wide tracking URI
                # (its auth and header providers read mlflow.get_tracking_uri()).
                mlflow.set_tracking_uri(uri)
                self._note(f"process-wide MLflow tracking URI set to {uri} (sagemaker-mlflow reads it)")
            if not uri.startswith("arn:"):
                # Idempotent: a logger keeps one copy of a filter object.
                logging.getLogger("mlflow.tracking.request_header.registry").addFilter(_quiet_plugin_headers)
            self._client = MlflowClient(tracking_uri=uri)
            self._limits = MLflowLimits.installed()
        return self._client

    def _send(self, run: RunInfo, summary: RunSummary) -> None:
        """One attempt: find or create the run, then ``log_batch`` what changed."""
        from mlflow.entities import Metric, Param, RunTag

        client = self._get_client()
        assert self._limits is not None  # set with the client
        plan = plan_write(run, summary, self._tags, self._limits)
        for note in plan.notes:
            self.adjustments += 1
            self._note(note)
        identity = plan.tags[RUN_KEY_TAG]
        state = self._runs.get(identity)
        if state is None:
            state = self._open_run(client, run, identity)
        elif not state.settled:
            state = self._settle(client, state, identity)
        parameters: list[Any] = []
        tags = {name: value for name, value in plan.tags.items() if state.tags.get(name) != value}
        for name, value in plan.parameters.items():
            logged = state.parameters.get(name)
            if logged is None:
                parameters.append(Param(name, value))
            elif logged != value:
                # MLflow refuses to change a parameter; the latest value stays visible.
                tag = mlflow_key(CHANGED_PARAMETER_TAG + name, self._limits.key_length)
                if state.tags.get(tag) != value:
                    tags[tag] = value[: self._limits.tag_value_length]
                self._note(f"parameter {name!r} changed after it was logged; its latest value is tag {tag!r}")
        timestamp = int(time.time() * 1000)
        metrics = [Metric(name, value, timestamp, state.step) for name, value in plan.metrics.items()]
        run_tags = [RunTag(name, value) for name, value in tags.items()]
        try:
            for chunk in batches(metrics, parameters, run_tags, self._limits):
                client.log_batch(state.run_id, metrics=chunk[0], params=chunk[1], tags=chunk[2])
        except Exception as exc:
            if _DELETED in str(exc):
                self._runs.pop(identity, None)  # the retry finds the run that is left
            raise
        # Only now: a failed attempt is retried whole, with the same step.
        state.parameters.update((p.key, p.value) for p in parameters)
        state.tags.update(tags)
        if metrics:
            state.step += 1

    def _log_traces(self, run: RunInfo, traces: list[list[TraceSpan]], give_up: float) -> list[str | None]:
        """Log each trace, linked to the run the parameters go to; its outcome.

        Runs on the sink's thread; connection errors and 5xx are retried until
        ``give_up`` (``time.monotonic()``). Two calls per batch: the spans of all
        ``traces`` in one ``log_spans`` (MLflow's documented OTLP endpoint ``/v1/traces``
        on a server, the tables of a SQL store), which keeps their ids, parents, times
        and attributes and makes each trace from its spans (state, previews, token
        usage; name and tags from the root span's ``mlflow.traceTag.*``), then
        ``link_traces_to_run`` (measured on a local server: 14 ms per trace, against
        55 for ``start_trace`` plus the trace data artifact); a call MLflow refuses is
        split until the trace it refuses is alone. A server that takes no
        spans that way (MLflow before 3.4, a file store) gets each trace by
        ``start_trace`` (linked by its ``mlflow.sourceRun``) and its spans as its data
        artifact, as MLflow's own exporter does for such a server. A server without
        MLflow 3's trace API turns the traces off (said once).
        """

        from mlflow.tracing.client import TracingClient

        from ._mlflow_traces import mlflow_trace

        if self.traces_unsupported:
            return ["not sent: the tracking server takes no traces"] * len(traces)
        client = self._get_client()
        tracing = TracingClient(client.tracking_uri)

        def attempt(call: Callable[[], T]) -> T:
            return self._trace_attempts(call, give_up)

        key = run_key(run.experiment, run.run)
        outcomes: list[str | None] = [None] * len(traces)
        try:
            state = attempt(lambda: self._runs.get(key) or self._open_run(client, run, key))
        except Exception as exc:
            return [_failure(exc)] * len(traces)
        built: list[tuple[int, Any, Any]] = []
        for number, spans in enumerate(traces):
            try:
                info, data = mlflow_trace(
                    spans, experiment_id=state.experiment_id, run_id=state.run_id, run=run
                )
                built.append((number, info, data))
            except Exception as exc:  # one odd trace must not cost the others
                outcomes[number] = f"trace not built: {exc!r}"

        def log_spans(group: list[tuple[int, Any, Any]]) -> list[tuple[int, Any, Any]]:
            """Log ``group``'s spans and link it; the traces left for the artifact path.
            A call refused (not retried) is split in halves, down to one trace: MLflow
            refuses a whole call for one trace it refuses, and that one alone fails."""
            if self.spans_as_artifacts:
                return group
            every_span = [span for _, _, data in group for span in data.spans]
            try:
                attempt(functools.partial(tracing.log_spans, state.experiment_id, every_span))
                ids = [info.trace_id for _, info, _ in group]
                attempt(functools.partial(client.link_traces_to_run, ids, state.run_id))
            except Exception as exc:
                if _no_span_api(exc):
                    self.spans_as_artifacts = True
                    self._note(f"no spans at /v1/traces ({exc}); each trace's spans go as its data artifact")
                    return group
                if len(group) > 1 and not _retryable(exc) and time.monotonic() < give_up:
                    half = len(group) // 2
                    return log_spans(group[:half]) + log_spans(group[half:])
                for number, _, _ in group:
                    outcomes[number] = f"{type(exc).__name__}: {exc}"
            return []

        if built:
            built = log_spans(built)
        for number, info, data in built:
            if self.traces_unsupported or time.monotonic() >= give_up:
                outcomes[number] = "not sent: " + ("no trace API" if self.traces_unsupported else "deadline")
                continue
            try:
                stored = attempt(functools.partial(tracing.start_trace, info))
                if stored.tags.get(_SPANS_LOCATION) != "TRACKING_STORE":
                    # MLflow before 3.4 has no public call that stores a trace's spans:
                    # this is the one its own exporter makes for such a server.
                    upload = tracing._upload_trace_data  # noqa: SLF001 - see above
                    attempt(functools.partial(upload, stored, data))
            except Exception as exc:
                outcomes[number] = f"{type(exc).__name__}: {exc}"
                if _no_trace_api(exc):
                    self.traces_unsupported = True
                    logger.warning(
                        "asynctrack (MLflow): %s takes no traces (%s); parameters only from now on",
                        self._where(),
                        exc,
                    )
        return outcomes

    def _trace_attempts(self, call: Callable[[], T], give_up: float) -> T:
        """``call()``, retried (connection errors, 5xx) with backoff until ``give_up``,
        unless a parameter write waits: it goes first, and the traces fail."""
        delay = 0.2
        while True:
            try:
                return call()
            except Exception as exc:
                if (
                    _no_trace_api(exc)
                    or not _retryable(exc)
                    or _refused(exc)
                    or time.monotonic() + delay >= give_up
                ):
                    raise
                if self._caller is not None and self._caller.queued():
                    raise
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 5.0)

    def _open_run(self, client: Any, run: RunInfo, key: str) -> _Run:
        """Find the run by its key tag, or create it."""
        experiment_id = self._experiment_id(client, run.experiment)
        found = self._search(client, experiment_id, key)
        if found:
            # Not settled yet: the run found may be a twin that a racing creator deletes at
            # its next write (an older twin shows up); checked once more at the next write.
            return self._follow(client, found[0], experiment_id, key, settled=False, created=False)
        note = (
            "Events recorded by asynctrack: "
            f"`{run.events_uri}`\n\nRead them with `asynctrack.read_events("
            f"{run.events_uri.rsplit('/experiment=', 1)[0]!r}, {run.experiment!r}, {run.run!r})`."
        )
        created = client.create_run(
            experiment_id,
            run_name=run.run,
            tags={RUN_KEY_TAG: key, NOTE_TAG: note[: (self._limits or MLflowLimits()).tag_value_length]},
        )
        state = self._follow(client, created, experiment_id, key, settled=False, created=True)
        return self._settle(client, state, key)

    def _settle(self, client: Any, state: _Run, key: str) -> _Run:
        """Trackers that created the run at the same moment end with one: the oldest.

        Each creator checks right after creating and once more at its next write,
        when every racer's run is visible to all; all pick the same run (oldest
        start time, then run id) and the others delete their own and move to it
        (checking it once more at their next write). A tracker that found the run
        (it created none) checks once more at its next write too: the run it found
        may have lost to an older twin meanwhile, and its creator deleted it. A
        tracker that wrote to a twin deleted meanwhile searches again (see ``_DELETED``).
        """
        found = self._search(client, state.experiment_id, key)
        winner = found[0] if found else None
        state.checks += 1
        if winner is None or winner.info.run_id == state.run_id:
            state.settled = state.checks >= (2 if state.created else 1)
            return state
        if state.created:
            client.delete_run(state.run_id)
        # The run followed may itself lose to a twin seen later: check once more.
        return self._follow(client, winner, state.experiment_id, key, settled=False, created=False)

    def _follow(
        self, client: Any, mlflow_run: Any, experiment_id: str, key: str, *, settled: bool, created: bool
    ) -> _Run:
        """Write to ``mlflow_run`` from now on: open again, one step past its history."""
        if mlflow_run.info.status != "RUNNING":
            client.update_run(mlflow_run.info.run_id, status="RUNNING")
        step = 0
        if mlflow_run.data.metrics:
            history = client.get_metric_history(mlflow_run.info.run_id, "events_total")
            step = max((m.step for m in history), default=-1) + 1
        state = _Run(
            run_id=mlflow_run.info.run_id,
            experiment_id=experiment_id,
            step=step,
            parameters=dict(mlflow_run.data.params),
            tags=dict(mlflow_run.data.tags),
            settled=settled,
            created=created,
        )
        self._runs[key] = state
        return state

    def _search(self, client: Any, experiment_id: str, key: str) -> list[Any]:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
            max_results=50,
            order_by=["attributes.start_time ASC"],
        )
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def _experiment_id(self, client: Any, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = str(
                    client.create_experiment(
                        name, artifact_location=_artifacts_beside(self._uri), tags={"asynctrack": "true"}
                    )
                )
            except Exception as exc:
                if _error_code(exc) != _ALREADY_EXISTS:
                    raise
                experiment = client.get_experiment_by_name(name)  # another tracker made it
                if experiment is None:
                    raise
                experiment_id = str(experiment.experiment_id)
        else:
            experiment_id = str(experiment.experiment_id)
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
                self._note(f"experiment {name!r} was deleted in MLflow; restored it to log this run")
        self._experiments[name] = experiment_id
        return experiment_id

    def _finish_runs(self) -> None:
        client = self._get_client()
        for state in self._runs.values():
            try:
                client.set_terminated(state.run_id, status="FINISHED")
            except Exception as exc:  # one run's failure must not leave the others open
                logger.warning("asynctrack (MLflow): run %s not marked finished: %s", state.run_id, exc)
