"""``AsyncTracker``: the LangChain callback handler (the boundary of the library).

Every ``on_*`` method does the same three things on the caller's thread: take a
sequence number and a timestamp, capture the arguments as JSON bytes in one
orjson call (``_capture``: later mutations by the caller cannot change them),
and append one tuple to the engine's buffer. The envelope, redaction, batching
and writing all happen in the worker: a worker process by default, fed by a shipper
thread (``_remote``), or a worker thread (``worker="thread"``).
``run_inline = True`` makes LangChain call us directly in async code too, instead of
hopping to an executor (+430 µs per event, measured: see the README's benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import itertools
import logging
import os
import pickle
import secrets
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast
from uuid import UUID

import orjson
from langchain_core.callbacks.base import BaseCallbackHandler

from .._capture import (
    DICT_OF,
    OPTIONS,
    PLAIN,
    Capturer,
    cut_text,
    fields_in_lists,
    fields_of,
    lossy,
    safe_repr,
    safe_str,
    type_name,
    valid_text,
)
from .._config import TrackerConfig
from .._events._schema import ENDS, EVENT_KINDS, STARTS
from .._events._tail import TailSampler
from .._events._translate import EventTranslator
from .._export._protocol import Exporter
from .._layout import Layout, new_writer_id
from .._pipeline._durable import ENV_PREFIXES
from .._pipeline._engine import Engine, Statistics, install_sigterm_handler
from .._pipeline._protocol import TrackerEngine
from .._pipeline._queue import BoundedQueue, extra_bytes
from .._remote._client import ProcessEngine
from .._remote._spawn import EngineSpec, WorkerUnavailable
from .._sampling import (
    HEAD_SKIP_BELOW,
    MAX_UNSAMPLED,
    OTEL_PARENT,
    OTEL_TRACE,
    application_parent,
    head_sampled,
    randomness,
    ratio_threshold,
    root_sampled,
)
from .._sinks._base import ParametersSink, RunInfo, Sink
from .._sinks._registry import make_sink
from ._spec import TrackerSpec

if TYPE_CHECKING:
    from langchain_core.agents import AgentAction, AgentFinish
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult
    from tenacity import RetryCallState

__all__ = ["DEFAULT_DESTINATION", "AsyncTracker"]

logger = logging.getLogger("asynctrack")

DEFAULT_DESTINATION = "./asynctrack-logs"
#: The capture's orjson options, and a newline after the body: slicing it off is the one
#: exact-size copy of the body (``_record``), cheaper than a slice and a concatenation.
_CAPTURE_OPTIONS: Final = OPTIONS | orjson.OPT_APPEND_NEWLINE
_BODY: Final = slice(None, -1)  # the body without its newline (one slice object, not one per event)
#: An event without metadata: a constant, never changed (it is only encoded).
_NO_METADATA: Final[dict[str, Any]] = {}
# The hot path's C functions, one global lookup each instead of a global and an attribute.
_dumps: Final = orjson.dumps
_now: Final = time.time
_modules: Final = sys.modules
_said_thread: set[str] = set()
#: The default of the keywords LangChain passes beside the named ones (``run_type``,
#: ``invocation_params``, ``color``...): each is a parameter of the callback, written to
#: the event's data only when passed. A keyword that lands in ``**kwargs`` instead costs
#: CPython a string comparison with every parameter name before the dict insertion
#: (~800 instructions a keyword: an ``llm_start``'s three, 2.4k of its capture).
_UNSET: Final[Any] = object()
#: ``_queue`` of a handler whose ``_put`` is not a queue's (never appended to: ``_put`` is called).
_NO_QUEUE: Final[BoundedQueue[Any]] = BoundedQueue(max_events=0, wake=lambda: None)


def _process_obstacle(spec: TrackerSpec, destination: object) -> str | None:
    """Why this tracker cannot use the worker process, or ``None``."""
    if isinstance(destination, Sink):
        return "the destination is a Sink object, which lives in this process"
    try:
        pickle.dumps(spec)
    except Exception as exc:
        return f"its configuration cannot cross to the worker process ({type(exc).__name__}: {exc})"
    return None


def _say_thread_once(reason: str | None) -> None:
    if reason:
        _say_once(f"using a worker thread in this process: {reason}")


def _say_once(message: str) -> None:
    if message not in _said_thread:
        _said_thread.add(message)
        logger.info("asynctrack: %s", message)


def _thread_engine(spec: TrackerSpec, sink: Sink) -> Engine:
    engine, _ = spec.build(sink=sink)
    return engine


def _run_info(spec: TrackerSpec, sink: Sink) -> RunInfo:
    layout = Layout(experiment=spec.experiment, run=spec.run, writer=spec.writer)
    return RunInfo(
        experiment=spec.experiment,
        run=spec.run,
        events_uri=f"{sink.destination.rstrip('/')}/{layout.run_prefix}/",
    )


def _default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S", time.gmtime()) + f"-{secrets.token_hex(3)}"


_GRAPH_AWARE: dict[type[Any], type[Any]] = {}
#: LangGraph's lifecycle callbacks (langgraph >= 1.2), and the handler class they take.
_LIFECYCLE = "langgraph.callbacks"


@functools.cache
def _langgraph_installed() -> bool:
    try:
        return importlib.util.find_spec("langgraph") is not None
    except (ImportError, ValueError):  # a broken install, or an import blocked on purpose
        return False


def _graph_aware(cls: type[Any]) -> type[Any]:
    """``cls``, made a subclass of LangGraph's ``GraphCallbackHandler`` once this process
    has imported ``langgraph.callbacks`` (a graph's module does, before the graph runs):
    LangGraph calls ``on_interrupt``/``on_resume`` only on such handlers. Nothing of
    langgraph is imported here: importing ``langgraph.callbacks`` brings in LangSmith's
    run trees (0.12 s of a first tracker's 0.14 s on 2 cores at load 8, after
    ``langchain_core.runnables``), a cost only a graph's user should pay. With a
    langgraph older than 1.2 (no ``GraphCallbackHandler``), ``cls``."""
    known = _GRAPH_AWARE.get(cls)
    if known is not None:
        return known
    module = sys.modules.get(_LIFECYCLE)
    if module is None:
        return cls  # not remembered: langgraph may be imported later (see _join_graph)
    base = getattr(module, "GraphCallbackHandler", None)
    known = cls
    if isinstance(base, type) and not issubclass(cls, base):
        names = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        known = type(cls.__name__, (cls, base), names)
    _GRAPH_AWARE[cls] = _GRAPH_AWARE[known] = known
    return known


class AsyncTracker(BaseCallbackHandler):
    """Records every LangChain callback event without slowing the chain down.

    Pass it wherever LangChain takes callbacks (``config={"callbacks": [tracker]}``
    or ``callbacks=[tracker]``), from sync or async code, any thread, any loop.

    Args:
        destination: a directory (created if needed), ``s3://bucket/prefix``
            (needs the ``s3`` extra), or a ``Sink``.
        experiment_name: the experiment partition (and SageMaker experiment).
        run_name: the run partition (and SageMaker run); generated if omitted.
        config: buffering, batching and encoding settings.
        parameter_sinks: also receive the run's parameters at every flush
            (for example ``asynctrack.SageMakerParameters``).
        exporters: also send every run elsewhere, from the worker (for example
            ``asynctrack.OTLPExporter``: OpenTelemetry GenAI spans).
        **s3_options: passed to ``S3Sink`` for an ``s3://`` destination.

    Raises:
        ValueError: invalid configuration (raised here, not at first use).
    """

    run_inline = True  # called directly in async code, no executor hop
    raise_error = False  # LangChain must never propagate our (impossible) errors
    # LangChain reads one of these before every callback; the base class's are properties
    # (a Python call each), plain attributes are a dictionary lookup.
    ignore_llm = False
    ignore_retry = False
    ignore_chain = False
    ignore_agent = False
    ignore_retriever = False
    ignore_chat_model = False
    ignore_custom_event = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # An instance of the LangGraph-aware subclass where langgraph has lifecycle
        # callbacks and is imported already; else it becomes one when a chain starts
        # after langgraph was imported (_join_graph).
        made = _graph_aware(cls)
        # With a low sample_rate and failed traces not kept, of head_sampled(): its
        # callbacks skip traces not sampled at their entry. Made so here: a __class__
        # assignment turns the instance's attributes into a dict of their own, slower to
        # read on every event (~250 instructions per event at rate 0).
        config = kwargs.get("config")
        rate = getattr(config, "sample_rate", 1.0)
        if rate < HEAD_SKIP_BELOW and getattr(config, "sample_keep_errors", True) is False:
            made = head_sampled(made)
        return cast("Self", super().__new__(made))

    def __init__(
        self,
        destination: str | os.PathLike[str] | Sink = DEFAULT_DESTINATION,
        *,
        experiment_name: str = "default",
        run_name: str | None = None,
        config: TrackerConfig | None = None,
        parameter_sinks: Sequence[ParametersSink] = (),
        exporters: Sequence[Exporter] = (),
        **s3_options: Any,
    ) -> None:
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(f"experiment_name must be a non-empty string, got {experiment_name!r}")
        if run_name is not None and (not isinstance(run_name, str) or not run_name):
            raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
        config = config or TrackerConfig()
        if not isinstance(config, TrackerConfig):
            raise ValueError(f"config must be a TrackerConfig, got {config!r}")
        if not isinstance(exporters, Sequence) or isinstance(exporters, str):
            raise TypeError(
                "exporters must be a list of exporters, e.g. exporters=[OTLPExporter(...)], "
                f"got an object of type {type(exporters).__name__}"
            )
        for exporter in exporters:
            if not isinstance(exporter, Exporter):
                raise ValueError(f"exporters must hold exporter settings (OTLPExporter), got {exporter!r}")
        # A lone surrogate (os.fsdecode of a non-UTF-8 file name) cannot be written
        # in any JSON, key or parameter: U+FFFD instead, once, here.
        self.experiment_name = valid_text(experiment_name)
        self.run_name = valid_text(run_name) if run_name else _default_run_name()
        self.config = config
        sink = make_sink(destination, **s3_options)  # validates the destination and options now
        self._destination = sink.destination
        spec = TrackerSpec(
            destination=sink.destination if not isinstance(destination, Sink) else "",
            s3_options=dict(s3_options),
            experiment=self.experiment_name,
            run=self.run_name,
            writer=new_writer_id(),
            config=config,
            parameter_sinks=tuple(parameter_sinks),
            environ={k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)},
            exporters=tuple(exporters),
        )
        self._engine: TrackerEngine = self._start_engine(spec, sink, destination)
        self._engine.on_fork = weakref.WeakMethod(self._after_fork)
        if config.handle_sigterm:
            install_sigterm_handler()
        self._seq = itertools.count()
        self._graph_pending = _LIFECYCLE not in sys.modules and _langgraph_installed()
        self._put, self._queue = _put_of(self._engine)
        self._capture = Capturer(config.max_field_bytes, config.max_depth)
        self._max_depth = config.max_depth
        self._max_out = config.max_field_bytes + 1  # the body and its newline (_record)
        self._max_field = config.max_field_bytes
        #: Strings of at most this many characters fit in max_field_bytes (4 bytes a
        #: character at most): a longer name or streamed token is cut (cut_text).
        self._max_chars = config.max_field_bytes // 4
        self._warned_hot_error = False
        self._sampled_out = 0  # events of traces not sampled, skipped here
        if config.sample_rate < 1.0 and not config.sample_keep_errors:
            # Only then is anything looked up per event: at 1.0, or when the worker keeps
            # failed traces (it decides there), every event takes _record straight away.
            self._threshold = ratio_threshold(config.sample_rate)
            self._unsampled: dict[int, None] = {}
            self._sampled: dict[int, None] = {}  # live runs of traces sampled
            self._record = self._record_sampled  # type: ignore[method-assign] # per instance, on purpose

    def _start_engine(
        self, spec: TrackerSpec, sink: Sink, destination: str | os.PathLike[str] | Sink
    ) -> TrackerEngine:
        """The worker process's client, or a thread engine where a process cannot serve."""
        mode = self.config.worker or os.environ.get("ASYNCTRACK_WORKER") or "process"
        if mode not in ("process", "thread"):
            _say_once(f"ASYNCTRACK_WORKER={mode!r} is neither 'process' nor 'thread'; using 'process'")
            mode = "process"
        reason = None
        if mode == "process":
            reason = _process_obstacle(spec, destination)
            if reason is None:

                def thread_engine(renewed: EngineSpec) -> TrackerEngine:  # the fall back's
                    return _thread_engine(cast(TrackerSpec, renewed), sink)

                try:
                    return ProcessEngine(
                        spec=spec,
                        destination=sink.destination,
                        run_info=_run_info(spec, sink),
                        config=self.config,
                        fallback=thread_engine,
                    )
                except WorkerUnavailable as exc:
                    reason = str(exc)
            _say_thread_once(reason)
        return _thread_engine(spec, sink)

    def _after_fork(self, engine: TrackerEngine) -> None:
        """In a forked child: a sequence of its own (and, in a thread engine, counts)."""
        if isinstance(engine, Engine):
            translator = EventTranslator(
                experiment=self.experiment_name,
                run=self.run_name,
                writer=engine.layout.writer,
                config=self.config,
            )
            translate: EventTranslator | TailSampler = translator
            tail = None
            if self.config.sample_rate < 1.0 and self.config.sample_keep_errors:
                translate = tail = TailSampler(translator, self.config)
            engine.set_adapter(
                translate,
                translator.redacted_parameters,
                lambda: translator.placeholders,
                None if tail is None else lambda: tail.sampled_out,
                None if tail is None else lambda: tail.sampled_out_failing,
            )
        self._seq = itertools.count()
        self._put, self._queue = _put_of(engine)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def destination(self) -> str:
        """Where batches are written (a directory or ``s3://bucket/prefix``)."""
        return self._destination

    @property
    def events_uri(self) -> str:
        """The directory or S3 prefix holding this run's event files."""
        return self._engine.run_info.events_uri

    @property
    def closed(self) -> bool:
        """Whether the tracker has been closed."""
        return self._engine.closed

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every event recorded before this call is on durable storage.

        Other tasks and threads may keep recording meanwhile; their later events
        are not waited for. Local files are fsync'd; S3 objects are acknowledged.
        The run's parameters are written too.

        Args:
            timeout: seconds to wait at most (``None``: no limit).

        Raises:
            FlushTimeoutError: the timeout passed; says how many events are not yet
                written. Nothing is discarded; a later flush waits for them again.
            FlushError: a write failed (the batches are kept and retried).
            TrackerClosedError: the tracker is closed.
        """
        await self._engine.flush(timeout)

    def flush_blocking(self, timeout: float | None = None) -> None:
        """``flush()`` for sync code, with or without a running loop in this thread.

        Raises:
            DeadlockError: called from the tracker's worker thread (a hook or sink).
            FlushTimeoutError, FlushError, TrackerClosedError: as ``flush()``.
        """
        self._engine.flush_blocking(timeout)

    async def aclose(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the worker. Closing twice is harmless.

        Events recorded after ``aclose()`` begins are dropped and counted in
        ``statistics().dropped``; the callbacks still never raise.
        """
        await self._engine.aclose(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """``aclose()`` for sync code."""
        self._engine.close(timeout)

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> AsyncTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and not engine.closed:
            warnings.warn(
                f"unclosed {self!r}; it is flushed and closed at interpreter exit. "
                "Use 'async with AsyncTracker(...)' or call close()/aclose().",
                ResourceWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return (
            f"<AsyncTracker destination={self.destination!r} "
            f"experiment={self.experiment_name!r} run={self.run_name!r}>"
        )

    def statistics(self) -> Statistics:
        """A frozen snapshot of the counters: recorded, written, dropped, ..."""
        stats = self._engine.statistics()
        if self._sampled_out:
            stats = dataclasses.replace(stats, sampled_out=stats.sampled_out + self._sampled_out)
        return stats

    # -- the hot path --------------------------------------------------------------------
    #
    # Each callback: a dict of its arguments, one orjson call (``_capture``), one
    # tuple, its fields appended to the queue (one extend: see ``_pipeline._queue``).
    # try/except because a callback must never raise into the chain; what cannot be
    # recorded is counted as dropped (none is known to).

    def _record(
        self,
        kind: str,
        run_id: UUID | None,
        parent_run_id: UUID | None,
        name: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        data: dict[str, Any],
        extra: Any = None,
    ) -> None:
        try:
            if parent_run_id is None and kind in STARTS and OTEL_TRACE in sys.modules:
                _note_parent(data)  # a root inside an application OpenTelemetry span
            if name is None:  # the runnable's, from serialized (start events only)
                if "serialized" in data:
                    # Its "name" read here: a model's or a tool's start has no name of its
                    # own, and a call of _serialized_name costs ~600 instructions.
                    serialized = data["serialized"]
                    name = serialized.get("name") if type(serialized) is dict else None
                    if type(name) is not str or len(name) > self._max_chars:
                        name = _serialized_name(serialized, self._max_field)
            elif type(name) is not str or not name or len(name) > self._max_chars:
                # Whatever the caller passed as name= is only looked at in here: a
                # numpy array or a hostile __bool__ must not raise into the chain. A
                # longer one than max_field_bytes is cut, as any string.
                name = _resolve_name(name, data, self._max_field)
            # "data" first: the worker splices a streamed token in right after '{"data":{'.
            raw = {"data": data, "tags": tags or (), "metadata": metadata or _NO_METADATA}
            try:
                # No default: orjson runs no Python while it walks the caller's live
                # lists (see _capture), and raises at the first object it meets. None
                # does in LangChain's own events (the handler passes LangChain's
                # objects as their fields: fields_of); the others take _with_objects.
                out = _dumps(raw, None, _CAPTURE_OPTIONS)
                # Longer than the field limit: a field may need cutting, and is cut now
                # (what the buffer holds is what its byte bound counts). Else an
                # exact-size copy: orjson's result keeps a ~4 KiB allocation whatever
                # its length (tracemalloc: 4097 B for a 10-byte result); 100k waiting
                # records would hold 400 MB. The copy drops the newline.
                body = out[_BODY] if len(out) <= self._max_out else self._capture.careful(raw)
            except Exception:
                body = self._with_objects(raw)
            try:
                # The ids' ints (a slot read each): the queue then holds nothing the
                # collector tracks (see _events._schema).
                run = run_id.int  # type: ignore[union-attr] # not a UUID: below
                parent = parent_run_id and parent_run_id.int
            except AttributeError:  # a run id that is not a UUID is passed as it is
                run = run_id.int if isinstance(run_id, UUID) else run_id
                parent = parent_run_id.int if isinstance(parent_run_id, UUID) else parent_run_id
            # the error of an error event (read now: Capturer.error); a token
            record = (kind, next(self._seq), _now(), run, parent, name, body, extra)
            put = self._put  # an instance attribute: LOAD_ATTR is specialised, LOAD_METHOD is not
            if put is None:
                # The queue's put (BoundedQueue._put_sized) in this frame: a Python call
                # less per event (~400 instructions). The same bounds, in the same order;
                # put() when they do not let the record in (it drops, counts or blocks).
                queue = self._queue
                items = queue.items
                queued = len(items)
                if queued < queue.room and queue.bytes <= queue.byte_room:
                    items.extend(record)  # flat: the tuple is freed on return
                    if extra is None:
                        queue.bytes += len(body)
                    elif extra.__class__ is str and extra.isascii():  # a token: extra_bytes, inline
                        queue.bytes += len(body) + len(extra)
                    else:
                        queue.bytes += len(body) + extra_bytes(extra)
                    if queued >= queue.wake_at:
                        queue.woken()
                else:
                    queue.put(record)
            else:
                put(record)
        except Exception as exc:  # none known; counted, and said once
            self._engine.count_dropped()
            if not self._warned_hot_error:
                self._warned_hot_error = True
                logger.warning("asynctrack could not record a %s event: %r", kind, exc)

    def _with_objects(self, raw: dict[str, Any]) -> bytes:
        """``_record``'s body where ``raw`` holds objects, or values orjson refuses. The
        walk writes each object null and collects it (``found.append``, a C method:
        orjson still runs no Python); ``lossy()`` looks for one whose ``__dict__`` is
        not all its data (then the careful path writes the event), else they are
        written as their ``__dict__`` (``DICT_OF``, a C function too). Never raises."""
        try:
            found: list[Any] = []
            out = _dumps(raw, found.append, _CAPTURE_OPTIONS)
            if found:
                if lossy(found, self._max_depth):
                    return self._capture.careful(raw)
                out = _dumps(raw, DICT_OF, _CAPTURE_OPTIONS)
            if len(out) <= self._max_out:
                return out[_BODY]
        except Exception:  # a value orjson refuses: a lone surrogate, a cycle, ...
            pass
        return self._capture.careful(raw)

    def _record_sampled(
        self,
        kind: str,
        run_id: UUID | None,
        parent_run_id: UUID | None,
        name: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        data: dict[str, Any],
        extra: Any = None,
    ) -> None:
        """``_record`` behind the head decision (``sample_rate`` under 1.0, failed traces
        not kept): an event of a trace not sampled is counted and nothing else. The
        callbacks skip most such events at their entry (``head_sampled``); this decides
        the rest: roots inside an application span, LangGraph's lifecycle events, and
        children of a parent this tracker never saw (given to a model only), decided on
        the parent's id as a root is: siblings under it go together."""
        try:
            unsampled = self._unsampled
            run = run_id.int  # type: ignore[union-attr] # None: recorded, below
            if run in unsampled:
                if kind in ENDS:
                    del unsampled[run]  # a run ends once: it is there
                self._sampled_out += 1
                return
            if kind in ENDS:
                self._sampled.pop(run, None)
            elif kind in STARTS:
                if parent_run_id is not None:
                    parent_int = parent_run_id.int
                    skip = parent_int in unsampled or (
                        parent_int not in self._sampled and randomness(parent_int) < self._threshold
                    )
                else:
                    # _note_parent(), inlined: a root's start reads the application's span.
                    parent = data.get(OTEL_PARENT)
                    if parent is None and OTEL_TRACE in _modules:
                        parent = application_parent()
                        if parent is not None:
                            data[OTEL_PARENT] = parent
                    if parent is None:  # root_sampled() without a parent, inlined
                        skip = randomness(run) < self._threshold
                    else:
                        skip = not root_sampled(run, self._threshold, parent)
                if skip:
                    if len(unsampled) >= MAX_UNSAMPLED:  # runs that never end: forget the oldest
                        del unsampled[next(iter(unsampled))]
                    unsampled[run] = None
                    self._sampled_out += 1
                    return
                sampled = self._sampled
                if len(sampled) >= MAX_UNSAMPLED:
                    del sampled[next(iter(sampled))]
                sampled[run] = None
        except Exception:  # an odd run id: the event is recorded
            pass
        AsyncTracker._record(self, kind, run_id, parent_run_id, name, tags, metadata, data, extra)

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_type: Any = _UNSET,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        if self._graph_pending and _LIFECYCLE in sys.modules:  # no call until it is imported
            self._join_graph()
        if run_type is not _UNSET:
            kwargs["run_type"] = run_type
        kwargs["serialized"] = serialized
        kwargs["inputs"] = inputs
        self._record("chain_start", run_id, parent_run_id, name, tags, metadata, kwargs)

    def _join_graph(self) -> None:
        """Become LangGraph-aware (``_graph_aware``): called at a chain's start once
        langgraph's lifecycle module is imported. LangGraph picks the handlers for its
        lifecycle callbacks right after its graph's ``on_chain_start``, so a tracker
        made before the graph's module was imported still records the interrupts and
        resumes of its first run. Never raises."""
        self._graph_pending = False
        try:
            self.__class__ = _graph_aware(type(self))
        except Exception as exc:  # never into the chain; the events of the graph stay
            logger.warning("asynctrack cannot receive LangGraph's interrupts and resumes: %r", exc)

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        # A plain output (most are: a dict, a str) skips the call.
        kwargs["outputs"] = outputs if type(outputs) in PLAIN else fields_of(outputs)
        self._record("chain_end", run_id, parent_run_id, name, tags, None, kwargs)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        error_data = self._capture.error(error)
        self._record("chain_error", run_id, parent_run_id, name, tags, None, kwargs, error_data)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: Any = _UNSET,
        options: Any = _UNSET,
        name: Any = None,
        batch_size: Any = _UNSET,
        **kwargs: Any,
    ) -> None:
        _model_keywords(kwargs, invocation_params, options, batch_size)
        kwargs["serialized"] = serialized
        kwargs["prompts"] = prompts
        self._record("llm_start", run_id, parent_run_id, name, tags, metadata, kwargs)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: Any = _UNSET,
        options: Any = _UNSET,
        name: Any = None,
        batch_size: Any = _UNSET,
        **kwargs: Any,
    ) -> None:
        _model_keywords(kwargs, invocation_params, options, batch_size)
        kwargs["serialized"] = serialized
        kwargs["messages"] = fields_in_lists(messages) if type(messages) is list else messages
        self._record("chat_model_start", run_id, parent_run_id, name, tags, metadata, kwargs)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        if type(token) is str:
            # The token travels beside the body (a str is immutable) and is spliced
            # in first in data by the worker: its name "token" is ours, not a credential.
            # Longer than max_field_bytes: cut now, as any string (the record holds it).
            if len(token) > self._max_chars:
                token = cut_text(token, self._max_field)
            kwargs["chunk"] = fields_of(chunk)
            self._record("llm_new_token", run_id, parent_run_id, name, tags, None, kwargs, token)
        else:  # content blocks (a list): captured in the body, first in data as well
            self._record(
                "llm_new_token",
                run_id,
                parent_run_id,
                name,
                tags,
                None,
                {"token": token, "chunk": fields_of(chunk), **kwargs},
            )

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["response"] = fields_of(response)
        self._record("llm_end", run_id, parent_run_id, name, tags, None, kwargs)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        error_data = self._capture.error(error)
        self._record("llm_error", run_id, parent_run_id, name, tags, None, kwargs, error_data)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        color: Any = _UNSET,
        name: Any = None,
        tool_call_id: Any = _UNSET,
        **kwargs: Any,
    ) -> None:
        if color is not _UNSET:
            kwargs["color"] = color
        if tool_call_id is not _UNSET:
            kwargs["tool_call_id"] = tool_call_id
        kwargs["serialized"] = serialized
        kwargs["input_str"] = input_str
        kwargs["inputs"] = inputs
        self._record("tool_start", run_id, parent_run_id, name, tags, metadata, kwargs)

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        color: Any = _UNSET,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        if color is not _UNSET:
            kwargs["color"] = color
        kwargs["output"] = output if type(output) in PLAIN else fields_of(output)
        self._record("tool_end", run_id, parent_run_id, name, tags, None, kwargs)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        error_data = self._capture.error(error)
        self._record("tool_error", run_id, parent_run_id, name, tags, None, kwargs, error_data)

    def on_agent_action(
        self,
        action: AgentAction,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["action"] = action
        self._record("agent_action", run_id, parent_run_id, name, tags, None, kwargs)

    def on_agent_finish(
        self,
        finish: AgentFinish,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["finish"] = finish
        self._record("agent_finish", run_id, parent_run_id, name, tags, None, kwargs)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["serialized"] = serialized
        kwargs["query"] = query
        self._record("retriever_start", run_id, parent_run_id, name, tags, metadata, kwargs)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["documents"] = documents
        self._record("retriever_end", run_id, parent_run_id, name, tags, None, kwargs)

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        error_data = self._capture.error(error)
        self._record("retriever_error", run_id, parent_run_id, name, tags, None, kwargs, error_data)

    def on_text(
        self,
        text: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["text"] = text
        self._record("text", run_id, parent_run_id, name, tags, None, kwargs)

    def on_retry(
        self,
        retry_state: RetryCallState,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        # tenacity reuses its RetryCallState across attempts: copy what matters now.
        try:
            outcome = retry_state.outcome
            failed = outcome is not None and outcome.failed
            kwargs["attempt_number"] = retry_state.attempt_number
            kwargs["idle_for"] = retry_state.idle_for
            kwargs["seconds_since_start"] = retry_state.seconds_since_start
            kwargs["next_sleep"] = getattr(retry_state.next_action, "sleep", None)
            exception = outcome.exception() if failed and outcome is not None else None
            kwargs["exception"] = (
                None if exception is None else {"type": type_name(exception), "message": safe_str(exception)}
            )
        except Exception:  # an unexpected retry_state: record what we can
            kwargs["retry_state"] = retry_state
        self._record("retry", run_id, parent_run_id, name, tags, None, kwargs)

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        parent_run_id = kwargs.pop("parent_run_id", None)
        kwargs["name"] = name
        kwargs["data"] = data
        self._record("custom_event", run_id, parent_run_id, name, tags, metadata, kwargs)

    def on_interrupt(self, event: Any = None, **kwargs: Any) -> None:
        """LangGraph (>= 1.2): the graph paused for a human (``interrupt()``, or
        ``interrupt_before``/``interrupt_after``); recorded as ``graph_interrupt``."""
        self._lifecycle("graph_interrupt", event, kwargs)

    def on_resume(self, event: Any = None, **kwargs: Any) -> None:
        """LangGraph (>= 1.2): the graph resumed from a checkpoint; recorded as ``graph_resume``."""
        self._lifecycle("graph_resume", event, kwargs)

    def _lifecycle(self, kind: str, event: Any, fields: dict[str, Any]) -> None:
        """A graph lifecycle event, for the graph's run: its fields from LangGraph's event
        object (``GraphInterruptEvent``/``GraphResumeEvent``), or keyword arguments."""
        run_id = None
        data: dict[str, Any] = {}
        try:
            if hasattr(event, "checkpoint_id"):
                names = EVENT_KINDS[kind]
                data = {name: getattr(event, name, None) for name in names}
                run_id = getattr(event, "run_id", None)
            else:  # the keyword form: the interrupts first, the rest by name
                run_id = fields.pop("run_id", None)
                if kind == "graph_interrupt":
                    data["interrupts"] = event
                data.update(fields)
        except Exception as exc:  # an unexpected event object: what it is
            data["event"] = safe_repr(event)
            data["error"] = safe_repr(exc)
        self._record(kind, run_id, None, None, None, None, data)

    def on_stream_event(
        self,
        event: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        name: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs["event"] = event
        self._record("stream_event", run_id, parent_run_id, name, tags, None, kwargs)


def _put_of(engine: TrackerEngine) -> tuple[Callable[[Any], None] | None, BoundedQueue[Any]]:
    """The handler's ``_put`` and ``_queue`` for ``engine``: ``None`` and the engine's
    queue where its ``put`` is a ``BoundedQueue``'s with the byte bound (``_record`` then
    appends in its own frame), else its ``put`` (a test or a benchmark may set ``_put``
    to any callable too: ``_record`` calls it)."""
    put = engine.put
    queue = getattr(put, "__self__", None)
    if isinstance(queue, BoundedQueue) and put == queue._put_sized:  # noqa: SLF001 - the same method
        return None, queue
    return put, _NO_QUEUE


def _model_keywords(kwargs: dict[str, Any], invocation_params: Any, options: Any, batch_size: Any) -> None:
    """A model start's regular keywords (parameters of its callback: see ``_UNSET``) put
    into its data, in LangChain's order, where passed."""
    if invocation_params is not _UNSET:
        kwargs["invocation_params"] = invocation_params
    if options is not _UNSET:
        kwargs["options"] = options
    if batch_size is not _UNSET:
        kwargs["batch_size"] = batch_size


def _note_parent(data: dict[str, Any]) -> dict[str, Any] | None:
    """Record the application's active OpenTelemetry span in a root start's ``data``.

    LangSmith's client imports ``opentelemetry`` wherever it is installed, so most
    applications have it loaded without using it: OpenTelemetry's context is read
    first, with one C call where it keeps it in its default place (a ``ContextVar``),
    and an empty context has no span (1.2k instructions, against 4.3k for
    ``application_parent()`` to find none)."""
    parent = data.get(OTEL_PARENT)
    if parent is None:
        try:
            # OpenTelemetry's own names (private): where they are not, the full look-up.
            runtime = sys.modules["opentelemetry.context"]._RUNTIME_CONTEXT  # noqa: SLF001
            current = runtime._current_context  # noqa: SLF001
            if type(current) is ContextVar and not current.get():
                return None
        except Exception:  # another runtime context, another opentelemetry
            pass
        parent = application_parent()
        if parent is not None:
            data[OTEL_PARENT] = parent
    return parent


def _resolve_name(name: Any, data: dict[str, Any], limit: int) -> str | None:
    """The event's name: ``name=`` as text, else the runnable's from ``serialized``;
    cut at ``limit`` bytes (``cut_text``)."""
    if name is None or (type(name) is str and not name):
        return _serialized_name(data.get("serialized"), limit)
    if isinstance(name, str):
        return _cut(str.__str__(name), limit)
    return safe_repr(name)


def _cut(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` bytes (``cut_text``), looked at only when it may not fit."""
    return text if len(text) * 4 <= limit else cut_text(text, limit)


def _serialized_name(serialized: Any, limit: int) -> str | None:
    """The runnable's name from LangChain's ``serialized`` dict (often ``None`` in 1.x),
    cut at ``limit`` bytes (``cut_text``)."""
    if type(serialized) is dict:
        name = serialized.get("name")
        if type(name) is str:
            return _cut(name, limit)
        if name is not None and isinstance(name, str):  # a (str, Enum) tool name: its text, as name=
            return _cut(str.__str__(name), limit)
        ids = serialized.get("id")
        if type(ids) is list and ids and isinstance(ids[-1], str):
            last = ids[-1]
            return _cut(last if type(last) is str else str.__str__(last), limit)
    return None
