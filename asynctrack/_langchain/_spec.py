"""What a tracker's engine is made of, as plain data: built in this process or in the worker's.

``TrackerSpec`` holds everything the worker side needs (destination, options, names,
writer id, configuration, parameter sinks). The thread worker builds the engine from it
in the application's process; the worker process receives it pickled over the private
channel and builds the same engine there. Nothing here imports LangChain: the
translator (records → JSON lines) is the adapter's worker half.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .._config import TrackerConfig
from .._events._schema import SEQ
from .._events._tail import TailSampler
from .._events._translate import EventTranslator
from .._export._protocol import Exporter, ExportingSink, LineExporter
from .._layout import Layout
from .._pipeline._durable import ENV_PREFIXES, DurableHooks, Packed, apply_environ, durable_seqs
from .._pipeline._engine import Engine
from .._pipeline._loop import ChunkTranslate, Finishing, Translated
from .._pipeline._spool import Spool
from .._sinks._base import Batch, ParametersSink, RunInfo, Sink
from .._sinks._local import LocalSink
from .._sinks._registry import make_sink

__all__ = [
    "DEFAULT_SPOOL_DIR",
    "ENV_PREFIXES",
    "DurableHooks",
    "TrackerSpec",
    "apply_environ",
    "durable_seqs",
]


logger = logging.getLogger("asynctrack")

DEFAULT_SPOOL_DIR: Final = "~/.cache/asynctrack/spool"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrackerSpec:
    """A tracker's worker side, as data (picklable unless a hook or sink is not)."""

    destination: str
    s3_options: Mapping[str, Any]
    experiment: str
    run: str
    writer: str
    config: TrackerConfig
    parameter_sinks: tuple[ParametersSink, ...] = ()
    #: The application's ``ENV_PREFIXES`` variables (AWS, MLflow, SageMaker, ours) when the
    #: tracker was made: the worker process applies them before it builds the engine
    #: (it was started earlier, with the environment of that moment).
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Started where the engine is built (the worker process): spans leave from there.
    exporters: tuple[Exporter, ...] = ()

    def with_writer(self, writer: str) -> TrackerSpec:
        """The same spec under another writer id (a forked child's, a new worker's)."""
        return dataclasses.replace(self, writer=writer)

    def build(
        self,
        *,
        sink: Sink | None = None,
        hooks: DurableHooks | None = None,
        config: TrackerConfig | None = None,
        queue_events: int | None = None,
        packed: Packed | None = None,
    ) -> tuple[Engine, EventTranslator]:
        """The engine (started) and its translator.

        In the worker process, call ``apply_environ()`` first.

        Args:
            sink: a sink object to use instead of building one from ``destination``.
            hooks: durability callbacks (the worker process's acknowledgements).
            config: overrides ``self.config`` for the engine (not for the translator).
            queue_events: the count bound of the engine's queue (by default
                ``max_queue_events``).
            packed: the engine's queue holds packed items, unpacked by this before
                translation (the worker process's frames).
        """
        sink = sink if sink is not None else make_sink(self.destination, **self.s3_options)
        translator = EventTranslator(
            experiment=self.experiment, run=self.run, writer=self.writer, config=self.config
        )
        engine_config = config or self.config
        spool: Spool | None = None
        if engine_config.spool and not isinstance(sink, LocalSink):
            replay_options = getattr(sink, "replay_options", None)
            spool_cls = Spool if hooks is None else _ObservedSpool
            spool = spool_cls(
                engine_config.spool_dir or os.environ.get("ASYNCTRACK_SPOOL_DIR") or DEFAULT_SPOOL_DIR,
                sink.destination,
                engine_config.spool_max_bytes,
                options=replay_options() if callable(replay_options) else None,
            )
            if isinstance(spool, _ObservedSpool) and hooks is not None:
                spool.hooks = hooks
        translate: ChunkTranslate = translator
        tail: TailSampler | None = None
        if self.config.sample_rate < 1.0 and self.config.sample_keep_errors:
            translate = tail = TailSampler(translator, self.config)
        if hooks is not None:
            sink = _ObservedSink(sink, hooks)
            translate = _ObservedTranslate(translate, hooks)
        if packed is not None:
            translate = _Unpacking(translate, packed.unpack)
        layout = Layout(experiment=self.experiment, run=self.run, writer=self.writer, gzip=engine_config.gzip)
        run_info = RunInfo(
            experiment=self.experiment,
            run=self.run,
            events_uri=f"{sink.destination.rstrip('/')}/{layout.run_prefix}/",
        )

        def start_exporters() -> list[LineExporter]:
            return [*_start_exporters(self.exporters), *_sink_exporters(self.parameter_sinks, run_info)]

        engine = Engine(
            sink=sink,
            layout=layout,
            run_info=run_info,
            translate=translate,
            parameters=translator.redacted_parameters,
            parameter_sinks=self.parameter_sinks,
            config=engine_config,
            spool=spool,
            placeholders=lambda: translator.placeholders,
            exporters=start_exporters(),
            start_exporters=start_exporters,  # again in a forked child
            queue_events=queue_events,
            # Packed frames are bounded by the worker process's host, not by this queue.
            queue_bytes=engine_config.max_queue_bytes if packed is None else None,
            sampled_out=None if tail is None else lambda: tail.sampled_out,
            sampled_out_failing=None if tail is None else lambda: tail.sampled_out_failing,
            records_in=None if packed is None else packed.records_in,
            flat=packed is None,  # the handler's records, here in the application
        )
        return engine, translator


def _start_exporters(exporters: tuple[Exporter, ...]) -> list[LineExporter]:
    """The exporters that start; one that cannot is logged and left out: the files go on."""
    started = []
    for exporter in exporters:
        try:
            started.append(exporter.start())
        except Exception:
            logger.exception("asynctrack: exporter %r could not start; events are still written", exporter)
    return started


def _sink_exporters(sinks: tuple[ParametersSink, ...], run: RunInfo) -> list[LineExporter]:
    """The exporters of the parameter sinks that take lines (MLflow's traces); one that
    cannot start is logged and left out: the files and the parameters go on."""
    started = []
    for sink in sinks:
        if not isinstance(sink, ExportingSink):
            continue
        try:
            exporter = sink.line_exporter(run)
        except Exception:
            logger.exception("asynctrack: %r could not start its export; events are still written", sink)
            continue
        if exporter is not None:
            started.append(exporter)
    return started


class _ObservedTranslate:
    """The translator (a ``ChunkTranslate``), telling the hooks of each event the
    ``redact`` hook dropped, or sampling held or dropped (an empty list)."""

    def __init__(self, translator: ChunkTranslate, hooks: DurableHooks) -> None:
        self._translator = translator
        self._filtered = hooks.filtered

    def prepare(self, records: Sequence[Any], /) -> None:
        self._translator.prepare(records)

    def finish(self) -> None:
        if isinstance(self._translator, Finishing):
            self._translator.finish()

    def __call__(self, record: Any, /) -> Translated:
        out = self._translator(record)
        if out is None or out == []:
            self._filtered(record[SEQ])
        return out

    def many(self, records: Sequence[Any], /) -> Sequence[Translated | Exception]:
        results = self._translator.many(records)
        for record, out in zip(records, results, strict=True):
            if out is None or (type(out) is list and not out):
                self._filtered(record[SEQ])
        return results


class _Unpacking:
    """The translator (a ``ChunkTranslate``) of an engine whose queue holds packed items:
    a chunk's items are unpacked once (in ``prepare``), then translated as records."""

    def __init__(self, translator: ChunkTranslate, unpack: Callable[[Sequence[Any]], list[Any]]) -> None:
        self._translator = translator
        self._unpack = unpack
        self._chunk: Sequence[Any] | None = None
        self._records: list[Any] = []

    def _records_of(self, items: Sequence[Any]) -> list[Any]:
        if items is not self._chunk:
            self._chunk, self._records = items, self._unpack(items)
        return self._records

    def prepare(self, items: Sequence[Any], /) -> None:
        self._translator.prepare(self._records_of(items))

    def many(self, items: Sequence[Any], /) -> Sequence[Translated | Exception]:
        try:
            return self._translator.many(self._records_of(items))
        finally:
            self._chunk, self._records = None, []  # the records are the batch's now

    def __call__(self, item: Any, /) -> Translated:
        raise TypeError("packed records are translated a chunk at a time (many)")

    def finish(self) -> None:
        if isinstance(self._translator, Finishing):
            self._translator.finish()


class _ObservedSink:
    """A sink that reports each batch it stored durably."""

    def __init__(self, inner: Sink, hooks: DurableHooks) -> None:
        self._inner = inner
        self._hooks = hooks

    @property
    def destination(self) -> str:
        return self._inner.destination

    def replay_options(self) -> dict[str, str] | None:
        options = getattr(self._inner, "replay_options", None)
        return options() if callable(options) else None

    async def start(self) -> None:
        await self._inner.start()

    async def write_batch(self, batch: Batch) -> None:
        await self._inner.write_batch(batch)
        self._hooks.batch(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        await self._inner.write_document(key, data)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ObservedSpool(Spool):
    """A spool that reports each batch it kept (spooled events are durable, redacted)."""

    hooks: DurableHooks | None = None

    def save(self, batch: Batch, *, claimed: bool = False) -> str | None:
        path = super().save(batch, claimed=claimed)
        if path is not None and self.hooks is not None and batch.data:
            (self.hooks.spooled or self.hooks.batch)(batch)
        return path
