"""Recorded lines -> finished OTLP spans: one span per LangChain run.

The input is the JSON lines the worker writes (the same redacted bytes as the files),
in the order it writes them, so a live export and a backfill from the files run this
same code and give the same ids:

- trace id: the root run's id (its 16 bytes: a trace is found by its root run's id);
  a child takes its parent's trace;
- span id: the first 8 bytes of BLAKE2b of the run id (deterministic, unique within a
  trace but for a 2**-64 chance);
- parent span id: derived from ``parent_run_id`` the same way. A run whose parent was
  never seen, started while exactly one root of its tracker is open (and not sampled
  apart: ``sampled_apart`` in its start), is the child of that root's innermost open run,
  marked ``asynctrack.parent_inferred`` (``SpanAssembler._home``); else its trace is
  named after its parent, whose span id it keeps as its parent's. That parent's later
  children go where its first one went (while that root is open).

A start event opens a span; its end or error event closes it and it is encoded at once.
When content is not captured, a model call's end is read by a schema that builds only the
values its span needs (``_model_end``, with the ``otel`` extra's msgspec); any other shape
of line is parsed whole.
Streamed tokens give ``gen_ai.response.time_to_first_chunk`` and are otherwise only
counted (a token line is not parsed: its ``run_id`` and ``ts`` are read from the
envelope's fixed order; from a stream's second token on, the line is found by its run
id's text alone, see ``SpanAssembler._token``). Any other event of a run (agent actions, retries, custom
events, LangGraph interrupts and resumes, text) becomes a span event named
``langchain.<kind>``.

A line longer than ``SPLIT_BYTES`` is read in parts when content is not captured: the
envelope before ``"data"`` and the fields after it (``tags``, ``metadata``) are parsed, and
``data`` only for the kinds whose attributes come from it (model calls, tools, errors,
some span events); a model start's ``messages`` or ``prompts``, written last in ``data``
by the handler, are cut off unparsed. The writer's layout makes the cuts safe: a key's
text ``,"k":`` can only stand in a line outside any string, and a cut made anywhere but
at the top level leaves unbalanced JSON, which fails to parse: then the whole line is
parsed, as any line of another layout is.
A model start read in parts is described (span name, kind, request attributes) once per
text of its ``data`` without content and of its metadata: the calls of one model setup
share it, and are not parsed again.

Runs not yet ended are held by bytes (``max_open_bytes``); past that the oldest open run
is exported at once, marked ``asynctrack.unfinished = "evicted"``, and its later end is
counted (``late_ends``), not exported twice. At ``close()`` every open run is exported
marked ``asynctrack.unfinished = "not_ended"``, status unset. An end whose start was
never seen (dropped, or recorded by a process that died) is rebuilt from the end alone
(``start = ts - duration``), marked ``asynctrack.start_missing``.
"""

from __future__ import annotations

import binascii
import hashlib
import operator
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, islice
from typing import Any, Final

import orjson

from .._events._schema import GRAPH_KINDS, id_text, is_interrupt
from .._sampling import OTEL_PARENT, SAMPLED_APART
from . import _protobuf as pb
from ._metrics import Key, Metrics, Series
from ._semconv import Described, Ended, describe_end, describe_start, error_type, llm_end, tags_attribute

try:  # the otel extra: a model call's end read by its schema
    from . import _model_end as _schema
except ImportError:  # pragma: no cover - the test extra installs msgspec
    _schema = None  # type: ignore[assignment]  # then every llm_end line is parsed whole
_seconds: Final = _schema.seconds if _schema is not None else float  # a time's text read
# ... by msgspec alone (a ValueError: then by ``_seconds``), where a frame less counts.
_number: Final = _schema.number if _schema is not None else float

__all__ = ["PARENT_INFERRED", "SPLIT_BYTES", "SpanAssembler", "span_id_of", "trace_id_of"]

_START: Final = frozenset({"chain_start", "llm_start", "chat_model_start", "tool_start", "retriever_start"})
_END: Final = frozenset({"chain_end", "llm_end", "tool_end", "retriever_end"})
_ERROR: Final = frozenset({"chain_error", "llm_error", "tool_error", "retriever_error"})
_KIND: Final = b'"kind":"'
_TOKEN_KIND: Final = "llm_new_token"
_NEW_TOKEN: Final = b'llm_new_token"'
_RUN_ID: Final = b'"run_id":"'
_TS: Final = b'"ts":'
_ENVELOPE_HEAD: Final = 160  # the kind is within this many bytes of a line's start
#: Lines at least this long are read in parts (module docstring). Below it one parse of
#: the whole line costs less than the parts' two or three.
SPLIT_BYTES: Final = 1024
_DATA_AT: Final = b',"data":{'  # the envelope's end: "data" is the first field of the body
_TAGS_AT: Final = b'},"tags":['  # data's end: the body's next field
_PARENT_AT: Final = b'","parent_run_id":'  # the envelope's field after the run id
_ROOT_AT: Final = _PARENT_AT + b"null"  # ... of a root run
_CHILD_AT: Final = _PARENT_AT + b'"'  # ... of a child run: its parent's id follows
_NAME_AT: Final = b',"name":'  # ... and after the parent run id
_CLOSE: Final = ord("]")  # a model start's data ends with its content, a list
_CONTENT_OF: Final = {"chat_model_start": b',"messages":[', "llm_start": b',"prompts":['}
_OTEL_PARENT_KEY: Final = f'"{OTEL_PARENT}":'.encode()
_LAST_OF_DATA: Final = (b',"messages":[', b',"prompts":[')  # model starts' content, written last
# Kinds whose attributes come from data when content is not captured (any kind with it).
_DATA_KINDS: Final = frozenset(
    {"llm_start", "chat_model_start", "tool_start", "llm_end", "chain_error", "llm_error", "tool_error"}
    | {"retriever_error", "agent_action", "retry", "custom_event"}
    | GRAPH_KINDS
)
_MODEL_STARTS: Final = frozenset({"llm_start", "chat_model_start"})
# Ends and model starts by the 13 bytes after '"kind":"' (the kind and, in the envelope's
# order, the start of the next field). When content is not captured, the light ends need
# nothing of the line but its run id and time (not parsed); an llm_end is read by its
# schema (``_model_end``); a model start may be of a known template
# (SpanAssembler._known_start).
_HEADS: Final = {
    b'chain_end","e': "chain_end",
    b'tool_end","ex': "tool_end",
    b"retriever_end": "retriever_end",
    b'llm_end","exp': "llm_end",
    b"chat_model_st": "chat_model_start",
    b'llm_start","e': "llm_start",
}
_LIGHT_ENDS: Final = frozenset({"chain_end", "tool_end", "retriever_end"})
_NEVER: Final = 1 << 62  # a line length never reached
_NO_EVENTS: Final[list[bytes]] = []  # a span's events until its first: read, never written
_NO_KEY: Final = b"\n"  # a stream key no slice of a line is (lines are split at newlines)
_NO_DATA: Final[dict[str, Any]] = {}  # read, never written
_NAME_TYPES: Final = (str, type(None))  # an experiment or run name that can key a cache
_ZERO_ID: Final = bytes(8)
# attribute("langchain.run_id", id) of a 36-character id, but the id's bytes.
_RUN_ID_ATTRIBUTE: Final = pb.span_attribute("langchain.run_id", "0" * 36)[:-36]
_STREAMED: Final = pb.span_attribute("gen_ai.request.stream", True)
# span_attribute("gen_ai.response.time_to_first_chunk", seconds): this head, then the double.
_FIRST_CHUNK: Final = pb.span_attribute("gen_ai.response.time_to_first_chunk", 0.0)[:-8]
_DOUBLE: Final = struct.Struct("<d").pack
_TIMES: Final = pb.TIMES
_CHUNKS: dict[int, bytes] = {}  # the asynctrack.stream.chunks attributes of a few counts
_CHUNKS_KEPT: Final = 1024


def _chunks(count: int) -> bytes:
    """``span_attribute("asynctrack.stream.chunks", count)``, kept for the next span with as many."""
    found = pb.span_attribute("asynctrack.stream.chunks", count)
    if len(_CHUNKS) >= _CHUNKS_KEPT:
        _CHUNKS.clear()
    _CHUNKS[count] = found
    return found


_KNOWN_IDS: Final = 65_536  # ended runs whose ids are remembered for their late children
_TRACKERS: Final = 64  # trackers kept with no root open (SpanAssembler._track)
_INFERRED: Final = 4096  # parents never seen whose children's place is remembered (_home)
_PARENT_FIELD: Final = b"\x22\x08"  # a Span's parent_span_id: its tag and length (pb.span_head)
_INFERRED_KEY: Final = b"\x0a\x1aasynctrack.parent_inferred"  # PARENT_INFERRED's key field
_NOT_PLACED: Final = ("", "")  # in SpanAssembler._inferred: a parent whose first child was not placed
#: The attribute of a run placed under an open run of its tracker's one open root, its
#: parent never seen: that parent's run id.
PARENT_INFERRED: Final = "asynctrack.parent_inferred"
_TAILS: Final = 256  # texts of the fields after data kept parsed
_TAIL_KEPT: Final = 4096  # ... if at most this long
_DESCRIBED: Final = 256  # model start descriptions kept (a few per model and prompt setup)
_RECENT_STARTS: Final = 4  # model start templates tried before their text is looked up
_PAUSED: Final = 4096  # LangGraph checkpoints a graph paused at, kept for the resume's link
# The attribute of the link from a resumed graph's span to the span of the run it paused in.
_RESUMED_FROM: Final = (pb.attribute("langgraph.link", "resumed_from"),)
# A node's run ended by LangGraph's GraphInterrupt: the graph paused for a human, no failure.
_INTERRUPTED: Final = pb.span_attribute("langgraph.interrupted", True)
_EVENT_ATTRIBUTES: Final = {
    "agent_action": ("tool", "gen_ai.tool.name"),
    "retry": ("attempt_number", "langchain.retry.attempt"),
    "custom_event": ("name", "langchain.event.name"),
}


_FROMHEX: Final = bytes.fromhex  # a classmethod: bound once, not at each call
_UNHEXLIFY: Final = binascii.unhexlify


def _uuid_bytes(run_id: str) -> bytes:
    try:
        if len(run_id) == 36:
            return _FROMHEX(run_id.replace("-", ""))  # the canonical form, as LangChain writes it
        return uuid.UUID(run_id).bytes
    except ValueError:
        return hashlib.blake2b(run_id.encode(), digest_size=16).digest()


def trace_id_of(root_run_id: str) -> bytes:
    """The trace id of the trace whose root run is ``root_run_id``."""
    return _uuid_bytes(root_run_id)


def span_id_of(run_id: str) -> bytes:
    """The span id of run ``run_id``: never all zero (invalid in OTLP)."""
    return _span_id(_uuid_bytes(run_id))


def _span_id(run_bytes: bytes) -> bytes:
    hasher = _BLAKE2B_8.copy()  # BLAKE2b-64 set up once (its parameter block): a copy is cheaper
    hasher.update(run_bytes)
    digest = hasher.digest()
    return digest if digest != _ZERO_ID else b"\x00" * 7 + b"\x01"


_BLAKE2B_8: Final = hashlib.blake2b(digest_size=8)  # never updated: copied


def _ns(ts: Any) -> int:
    kind = type(ts)
    return int(ts * 1e9) if kind is float or kind is int else 0  # a bool is neither


class _Template:
    """What a start line says about its span but for its time, run id and parent."""

    __slots__ = (
        "common",
        "described",
        "metric_key",
        "name_kind",
        "people",
        "root",
        "series",
        "size",
        "tracker",
    )

    def __init__(
        self,
        described: Described,
        common: list[bytes],
        people: tuple[bytes, ...],
        metric_key: Key | None,
        tracker: str | None = None,
        root: bool = False,
    ) -> None:
        self.described = described
        self.common = common  # the attributes after the run id (_common)
        self.people = people  # the run's own session and user attributes
        self.metric_key = metric_key  # model calls: the metrics' common attributes
        # The tracker that recorded its runs (the line's "tracker"); None: a run of it whose
        # parent was never seen is not placed in an open root's trace (SpanAssembler._home).
        self.tracker = tracker
        self.root = root  # its runs are roots (a template is of roots or of children only)
        self.name_kind = pb.name_and_kind(described.name, described.kind)
        self.size = 200 + sum(map(len, described.attributes)) + sum(map(len, common))
        # The metrics series of its calls by response model, with the Metrics they are of.
        self.series: dict[str | None, tuple[Metrics, Series]] = {}


class _Recent:
    """A model start template recently read by ``SpanAssembler._known_start``, with its texts:
    the line's from its kind to ``"run_id":"`` (``head``), from its name to its content's key
    (``rest``), and from the ``]`` that ends its content on (``tail``)."""

    __slots__ = ("follower", "head", "rest", "root", "run_offset", "tail", "tail_at", "template")

    def __init__(self, root: bool, head: bytes, rest: bytes, tail: bytes, template: _Template) -> None:
        self.root = root
        self.head = head
        self.run_offset = len(head) - 10  # from the kind to the run id's key
        self.rest = rest  # ~1 KB: compared in place (startswith), a slice would be copied
        self.tail = tail
        self.tail_at = -len(tail)  # compared as a slice (line[tail_at:]): no argument parsing
        self.template = template
        self.follower: _Recent | None = None  # the template the next start had, last time


class _Open:
    """A run whose start was seen and whose end was not yet.

    Made by ``SpanAssembler._open_span``, which sets every slot (no ``__init__`` frame per run).
    """

    __slots__ = (
        "attributes",
        "chunks",
        "events",
        "first_chunk_ns",
        "head",
        "kids",
        "last_ns",
        "links",
        "size",
        "span_id",
        "start_ns",
        "stream_key",
        "template",
        "up",
    )

    head: bytes  # the Span's ids, name and kind (pb.span_head)
    span_id: bytes
    start_ns: int
    last_ns: int
    template: _Template
    attributes: list[bytes]
    events: list[bytes]  # _NO_EVENTS until its first
    first_chunk_ns: int
    chunks: int
    stream_key: bytes  # its '"run_id":"<id>' text once its first token was seen
    size: int  # estimated: 200, its attributes and its events
    links: bytes  # its links fields (pb.link), if any: a resumed graph's
    # Where SpanAssembler._home looks (the open runs of a tracker as a tree, kept as runs
    # open and end): the run it is registered under (its open parent, of its tracker; a
    # root: its tracker's node), and its open children registered so, to their run ids.
    up: _Open | None
    kids: dict[_Open, str] | None


_new_open: Final = object.__new__


def _register(span: _Open, run_id: str, up: _Open) -> None:
    """``span`` (of run ``run_id``) registered under ``up`` in its tracker's tree (``_home``)."""
    kids = up.kids
    if kids is None:
        up.kids = {span: run_id}
    else:
        kids[span] = run_id
    span.up = up


class SpanAssembler:
    """Turns recorded lines into encoded spans (one thread at a time; holds state).

    Args:
        capture_content: write message content (see ``_semconv``).
        max_open_bytes: bound on the runs held open (estimated encoded size).
        metrics: where ended model calls are also recorded (``/v1/metrics``), if anywhere.

    Attributes:
        open_bytes: the estimated size of the runs held open.
        late_ends: end events of runs exported before they ended (evicted).
        bad_lines: lines that could not be read (not JSON, no run id); skipped.
    """

    def __init__(
        self,
        *,
        capture_content: bool = False,
        max_open_bytes: int = 16 * 1024 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.capture_content = capture_content
        self.metrics = metrics
        self.max_open_bytes = max_open_bytes
        self.open_bytes = 0
        self.late_ends = 0
        self.bad_lines = 0
        self._open: dict[str, _Open] = {}
        # run id -> (trace id, span id, session and user attributes), for open runs and the
        # last _KNOWN_IDS ended ones: a child whose start comes after its parent ended
        # still finds its trace.
        self._ids: dict[str, tuple[bytes, bytes, tuple[bytes, ...]]] = {}
        self._evicted: dict[str, None] = {}
        self._tags: dict[tuple[Any, ...], bytes | None] = {}
        self._names: dict[tuple[Any, Any], tuple[bytes, ...]] = {}  # (experiment, run) -> attributes
        self._described: dict[tuple[Any, ...], Described] = {}  # model starts (see _start)
        self._templates: dict[tuple[Any, ...], _Template] = {}  # model starts (see _known_start)
        self._tails: dict[bytes, dict[str, Any]] = {}  # the fields after data, by their text (_split)
        self._streams: dict[bytes, _Open] = {}  # open runs past their first token, by stream_key
        # (checkpoint namespace, checkpoint id) a graph paused at -> its span's trace and span ids
        self._paused: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        # Per tracker whose runs are kept as a tree (from its first run whose parent was
        # never seen on: _track), a node whose kids are its open roots (_Open.up, kids).
        self._trackers: dict[str, _Open] = {}
        # A parent never seen -> the run id its first child was placed under by _home and
        # that run's root's (its later children go there while that root is open), or
        # _NOT_PLACED: its first child was not placed (nor are they). The last _INFERRED.
        self._inferred: dict[str, tuple[str, str]] = {}
        self._k = 0  # where the last line read had the k of its "kind"
        self._ts_at = 0  # where the last model start read by _known_start had its time
        # The templates of the last model starts read by _known_start, the newest first, and
        # the last one a start had (its follower is tried first: a few model setups called
        # in turn are each found at the first try).
        self._recent_starts: list[_Recent] = []
        self._last_start: _Recent | None = None
        self._run_at = _NEVER  # where the last stream key found was, from the k of "kind"
        self._runs_at: tuple[int, ...] = ()  # ... in each envelope layout seen (its run id's place)

    def add(self, lines: Iterable[bytes], utf8: bool = False) -> list[bytes]:  # noqa: PLR0915, C901 - the hot loop, one frame per chunk
        """Read ``lines`` in order; the spans they finished, encoded (``Span`` messages).
        ``utf8``: the lines are known to be UTF-8 (the engine's own: orjson's output), so a
        model end's schema need not check them first."""
        done: list[bytes] = []
        open_runs = self._open
        streams = self._streams
        tails = self._tails
        split = SPLIT_BYTES if not self.capture_content else _NEVER
        heads = _HEADS if not self.capture_content else None
        loads = orjson.loads
        k = self._k  # where the last line's "kind" was (its k): the next one's is within a byte or two
        run_at = self._run_at
        run_end = run_at + 46
        w_at, key_at, key_end = k + 13, k + run_at, k + run_end  # kept with k and run_at
        streaming: _Open | None = None  # the stream of the last token counted
        stream_key = _NO_KEY  # its key, while it is open
        counted = 0  # its tokens counted since its chunks were last updated
        for line in lines:
            # The k of "kind" is the line's first k (the envelope starts with seq and ts):
            # looked at where the last line had it, two bytes either side (a time's text is
            # 16 to 18 characters long), else found. A token's kind has a w where no other
            # kind has one (llm_new_token): a token of a stream whose first token was seen
            # is counted (most lines of a streamed call are these), found by its run id's
            # text where its envelope puts it.
            try:
                # 0x6B is b"k" and 0x77 b"w", as constants: no global looked up per line.
                if line[k] != 0x6B:
                    if line[k + 1] == 0x6B:
                        k += 1
                    elif line[k - 1] == 0x6B:
                        k -= 1
                    elif line[k + 2] == 0x6B:
                        k += 2
                    elif line[k - 2] == 0x6B:
                        k -= 2
                    else:
                        raise IndexError
                    w_at, key_at, key_end = k + 13, k + run_at, k + run_end
                if line[w_at] == 0x77:
                    key = line[key_at:key_end]
                    # The stream of the last token, compared before it is looked up: a
                    # call's tokens mostly come one after another.
                    if key == stream_key:
                        counted += 1
                        continue
                    span = streams.get(key)
                    if span is not None:
                        if counted:
                            streaming.chunks += counted  # type: ignore[union-attr]  # counted: a stream's
                        span.chunks += 1
                        streaming, stream_key, counted = span, key, 0
                        continue
                    token = True
                else:
                    token = False
                at = k - 1
            except IndexError:
                at = line.find(_KIND, 0, _ENVELOPE_HEAD)
                token = line[at + 8 : at + 22] == _NEW_TOKEN
                if at >= 0:
                    k = at + 1
                    w_at, key_at, key_end = k + 13, k + run_at, k + run_end
            if streaming is not None:
                # Any other line may end the stream, or read its count: its count is
                # brought up to date, and an ended stream (its key emptied) is forgotten.
                if counted:
                    streaming.chunks += counted
                    counted = 0
                if not streaming.stream_key:
                    streaming, stream_key = None, _NO_KEY
            known: str | None = None
            template_key: tuple[Any, ...] | None = None
            if at < 0:
                pass
            elif token:
                if line[at + 8 : at + 22] == _NEW_TOKEN and self._token(line, at):
                    run_at = self._run_at
                    run_end = run_at + 46
                    key_at, key_end = k + run_at, k + run_end
                    continue
            elif heads is not None:
                known = heads.get(line[at + 8 : at + 21])
                if known in _LIGHT_ENDS:
                    encoded = self._light_end(line, known, open_runs)
                    if encoded is not None:
                        done.append(encoded)
                        continue
                elif known == "llm_end" and _schema is not None:
                    encoded = self._model_end(line, open_runs, utf8)
                    if encoded is not None:
                        done.append(encoded)
                        continue
                elif known in _MODEL_STARTS and len(line) >= split:
                    handled, template_key = self._known_start(line, at, known)
                    if handled:
                        if self.open_bytes > self.max_open_bytes:
                            done.extend(self._evict())
                        continue
            parts = _split(line, tails) if len(line) >= split and known != "llm_end" else None
            data: dict[str, Any] | bytes
            tail = b""
            try:
                if parts is None:
                    event = loads(line)
                    run_id = event["run_id"]
                    data = event.get("data")
                    if type(data) is not dict:
                        data = {}
                else:
                    event, data, tail = parts
                    run_id = event["run_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.bad_lines += 1
                continue
            if type(run_id) is not str:
                self.bad_lines += 1
                continue
            kind = event.get("kind")
            if kind in _START:
                self._start(run_id, kind, event, data, tail, template_key if kind == known else None)
            elif kind in _END or kind in _ERROR:
                encoded = self._end(run_id, kind, event, data)
                if encoded is not None:
                    done.append(encoded)
            else:
                self._note(run_id, kind, event, data)
            if self.open_bytes > self.max_open_bytes:
                done.extend(self._evict())
        if counted:
            streaming.chunks += counted  # type: ignore[union-attr]  # counted: a stream's
        self._k = k
        return done

    def add_records(self, lines: Sequence[bytes], kinds: Sequence[Any], runs: Sequence[Any]) -> list[bytes]:
        """``add(lines)`` of the engine's lines (its own: UTF-8), told each line's kind and run
        id (``kinds[i]`` and ``runs[i]``: the line's own ``kind`` and ``run_id``, as the engine
        wrote them). The same spans.

        The streamed tokens of a run whose first token was read are counted, not read: the
        lines are cut where the run id object changes (the engine gives one object per run
        in a row: one comparison per line, in C), and a piece's tokens, if they are one
        row, are counted at once. Every other line is read by ``add``.
        """
        n = len(lines)
        if len(kinds) != n or len(runs) != n:  # not one kind and run id a line: not used
            return self.add(lines)
        if _TOKEN_KIND not in kinds:
            return self.add(lines, True)
        done: list[bytes] = []
        open_runs = self._open
        begin = start = 0  # the first line not read yet; the piece's first line
        for end in (*compress(range(1, n), map(operator.is_not, runs, islice(runs, 1, None))), n):
            run = runs[start]
            try:
                first = kinds.index(_TOKEN_KIND, start, end)
            except ValueError:  # no token in the piece
                start = end
                continue
            count = kinds[first:end].count(_TOKEN_KIND)
            start = end
            if type(run) is not str or kinds[first : first + count].count(_TOKEN_KIND) != count:
                continue  # not text, or the tokens are not one row: read
            if begin < first:
                done += self.add(lines[begin:first], True)  # what comes before may open its run
            span = open_runs.get(run)
            if span is None or not span.first_chunk_ns:  # its first token: read
                done += self.add(lines[first : first + 1], True)
                first += 1
                count -= 1
                span = open_runs.get(run)
            begin = first
            if span is not None and span.first_chunk_ns:
                span.chunks += count
                begin = first + count
        if begin < n:
            done += self.add(lines[begin:], True)
        return done

    def close(self) -> list[bytes]:
        """Every run still open, as spans marked ``asynctrack.unfinished = "not_ended"``."""
        runs = list(self._open)
        return [self._unfinished(run_id, "not_ended") for run_id in runs]

    @property
    def open_runs(self) -> int:
        return len(self._open)

    def open_span_ids(self) -> set[bytes]:
        """The span ids of the runs started and not yet ended (their spans are still to come)."""
        return {span.span_id for span in self._open.values()}

    # -- the kinds of line ------------------------------------------------------------------------

    def _light_end(self, line: bytes, kind: str, open_runs: dict[str, _Open]) -> bytes | None:
        """An end that adds nothing from its data (content not captured) to an open run: its
        span, from the envelope's run id and time alone; ``None``: parse the line."""
        at = line.find(_RUN_ID)
        run_id = line[at + 10 : at + 46].decode("ascii", "replace") if at >= 0 else ""
        span = open_runs.get(run_id)
        if span is None:
            return None
        at = line.find(_TS)
        try:
            end_ns = int(_seconds(line[at + 5 : line.find(b",", at)]) * 1e9)
        except ValueError:
            return None
        del open_runs[run_id]
        self.open_bytes -= span.size
        return self._finish(span, kind, {}, end_ns)

    def _model_end(self, line: bytes, open_runs: dict[str, _Open], utf8: bool = False) -> bytes | None:
        """A model call's end (content not captured) of an open run, read by its schema
        (``_model_end``): its span; ``None``: parse the line whole. ``utf8``: the line is
        known to be UTF-8 (as ``read`` checks: msgspec checks only the strings it builds)."""
        if not utf8 and not line.isascii():
            end = _schema.read(line)  # checked for UTF-8 first
        else:
            try:
                end = _schema.decode(line)  # _schema.read(line), without its frame
            except ValueError:  # msgspec's DecodeError and ValidationError
                return None
        if end is None:
            return None
        run_id = end.run_id
        try:
            span = open_runs[run_id]  # an end of an open run, nearly always
        except KeyError:
            return None
        ended = _schema.model_end(end.data.response, span.attributes)
        if ended is None:
            return None
        del open_runs[run_id]
        self.open_bytes -= span.size
        ts = end.ts
        return self._finish(span, "llm_end", _NO_DATA, int(ts * 1e9) if type(ts) is float else _ns(ts), ended)

    def _token(self, line: bytes, kind_at: int) -> bool:
        """A streamed token (its kind at ``kind_at``) not found by its stream's key: count
        it, note the first one's time. False: parse it whole.

        From its first token on, a stream is found by its key, its ``"run_id":"<id>`` text,
        at the place from its kind that its tracker's envelope gives (``_streams``); a
        second tracker's envelope gives another place (tried here, then kept as the first
        to try).
        """
        at = -1
        for run_at in self._runs_at:
            key_at = kind_at + 1 + run_at
            key = line[key_at : key_at + 46]
            span = self._streams.get(key)
            if span is not None:
                self._run_at = run_at
                span.chunks += 1
                return True
            if at < 0 and key[:10] == _RUN_ID:
                at = key_at  # a stream's first token: its run id where its envelope puts it
        if at < 0:
            at = line.find(_RUN_ID, kind_at)
        span = self._open.get(line[at + 10 : at + 46].decode("ascii", "replace")) if at >= 0 else None
        if span is None:
            return False
        if not span.first_chunk_ns:
            ts_at = self._ts_at  # where the last start read had its time (the envelope's second field)
            ts: float | None = None
            if line[ts_at - 5 : ts_at] == _TS and ts_at < kind_at:
                try:
                    ts = _number(line[ts_at : kind_at - 1])
                except ValueError:
                    pass  # not this layout, or not a JSON number: read below
            try:
                if ts is None:
                    ts_at = line.find(_TS)
                    ts = _seconds(line[ts_at + 5 : line.find(b",", ts_at)])
                span.first_chunk_ns = span.last_ns = int(ts * 1e9)
            except ValueError:
                return False
        if not span.stream_key:
            span.stream_key = line[at : at + 46]
            self._streams[span.stream_key] = span
            run_at = at - kind_at - 1
            self._run_at = run_at
            if run_at not in self._runs_at:
                self._runs_at = (run_at, *self._runs_at[:3])
        span.chunks += 1
        return True

    def _known_start(self, line: bytes, kind_at: int, kind: str) -> tuple[bool, tuple[Any, ...] | None]:  # noqa: PLR0915 - one frame per model start (hot)
        """A model start of a known template (below): its span opened from the line's seq-less
        text, without parsing it; ``(True, None)``. Else ``(False, key)``: parse it, and keep
        its template under ``key`` (``None``: a layout not recognized, nothing to keep).

        A start's span depends on its line but for its seq, time, run id and parent (read
        here from the envelope's fixed order) and its content (the last field of data): the
        rest of the line's text is the template's key, with whether the run is a root. The
        cuts are the ones ``_split`` and ``_without_content`` make, and a template is kept
        only when the line parsed in parts at those cuts (so they are the top level's).
        """
        recent = self._recent_starts
        last = self._last_start
        if last is not None and line[kind_at : kind_at + last.run_offset + 10] == last.head:
            head = last.head  # the text of every recent template's head alike (see below)
            run_at = kind_at + last.run_offset
        else:
            head = b""
            run_at = line.find(_RUN_ID, kind_at)
        after = run_at + 46
        parent_at = line[after : after + 22] if run_at >= 0 else b""
        if parent_at == _ROOT_AT:
            parent_run_id: str | None = None
            rest_at = after + 22
        elif parent_at[:19] == _CHILD_AT:  # a parent run: its 36 characters
            parent_run_id = line[after + 19 : after + 55].decode("ascii", "replace")
            rest_at = after + 56
        else:
            return False, None  # another layout (or a parent id that is not text): parsed
        root = parent_run_id is None
        # A recent start's text up to its content's key, and from the ']' that ends its
        # content: the same template (the tail is the line's last '},"tags":[' on: the
        # template's was, and the text has no overlap with itself). The one that followed
        # the last start's template last time first.
        known = last.follower if last is not None else None
        if not (
            known is not None
            and known.root is root
            and kind_at + known.run_offset == run_at
            and line.startswith(known.rest, rest_at)
            and line[known.tail_at :] == known.tail
            and (known.head is head or line.startswith(known.head, kind_at))
        ):
            for known in recent:
                if (
                    known.root is root
                    and kind_at + known.run_offset == run_at
                    and line.startswith(known.rest, rest_at)
                    and line[known.tail_at :] == known.tail
                    and (known.head is head or line.startswith(known.head, kind_at))
                ):
                    break
            else:
                known = None
        if known is None:
            if line[rest_at : rest_at + 8] != _NAME_AT:  # a known template's rest starts so
                return False, None
            data_at = line.find(_DATA_AT, rest_at)
            tags_at = line.rfind(_TAGS_AT)
            content_at = line.rfind(_CONTENT_OF[kind], data_at, tags_at)
            if data_at < 0 or content_at < 0 or line[tags_at - 1] != _CLOSE:
                return False, None
            key = (parent_run_id is None, line[kind_at:run_at], line[rest_at:content_at], line[tags_at:])
            template = self._templates.get(key)
            if template is None:
                return False, key
            head = line[kind_at : run_at + 10]
            for other in recent:
                if other.head == head:
                    head = other.head  # one object: compared by identity above
                    break
            content_end = content_at + len(_CONTENT_OF[kind])
            known = _Recent(key[0], head, line[rest_at:content_end], line[tags_at - 1 :], template)
            recent.insert(0, known)
            for dropped in recent[_RECENT_STARTS:]:
                dropped.follower = None  # no chain of dropped templates kept alive
            del recent[_RECENT_STARTS:]
        if last is not None:
            last.follower = known
        self._last_start = known
        template = known.template
        ts_at = self._ts_at  # where the last start's time was: seq has as many digits, mostly
        if line[ts_at - 5 : ts_at] != _TS:
            ts_at = line.rfind(_TS, 0, kind_at) + 5
            self._ts_at = ts_at
        text = line[ts_at : kind_at - 1]
        try:
            start_ns = int(_number(text) * 1e9)
        except ValueError:
            try:
                start_ns = int(float(text) * 1e9)  # _seconds(text), past msgspec
            except ValueError:
                return False, None
        run_text = line[run_at + 10 : after]
        run_id = run_text.decode("ascii", "replace")
        if run_id not in self._open:  # a second start of one run: the first one counts
            self._open_span(run_id, parent_run_id, start_ns, template, _NO_DATA, run_text)
        return True, None

    def _start(
        self,
        run_id: str,
        kind: str,
        event: Mapping[str, Any],
        raw: dict[str, Any] | bytes,
        tail: bytes = b"",
        template_key: tuple[Any, ...] | None = None,
    ) -> None:
        """``tail``: the text of the fields after data, when the line was read in parts;
        ``template_key``: where its template is kept (``_known_start``), if it can be."""
        if run_id in self._open:
            return  # a second start of one run: the first one counts
        parent_run_id = event.get("parent_run_id")
        parent_run_id = parent_run_id if type(parent_run_id) is str else None
        name = str(event.get("name") or kind.removesuffix("_start"))
        data, described, known_as, whole = self._start_data(kind, name, parent_run_id is None, raw, tail)
        metadata = event.get("metadata")
        metadata = metadata if type(metadata) is dict else {}
        if described is None:
            described = describe_start(
                kind, name, data, metadata, root=parent_run_id is None, capture=self.capture_content
            )
            if known_as is not None:
                if len(self._described) >= _DESCRIBED:
                    self._described.clear()
                self._described[known_as] = described  # read, never changed
        metric_key: Key | None = None
        if described.provider is not None and self.metrics is not None:
            metric_key = (
                ("gen_ai.operation.name", str(described.operation)),
                ("gen_ai.provider.name", described.provider),
            )
            if described.model is not None:
                metric_key = (*metric_key, ("gen_ai.request.model", described.model))
        tracker = event.get("tracker")
        root = parent_run_id is None
        if type(tracker) is not str or (not root and event.get(SAMPLED_APART) is True):
            tracker = None  # sampled apart from any root: placed in no other trace
        template = _Template(described, self._common(event), _people(metadata), metric_key, tracker, root)
        if template_key is not None and whole:
            if len(self._templates) >= _DESCRIBED:
                self._templates.clear()
            self._templates[template_key] = template  # read, never changed
        self._open_span(run_id, parent_run_id, _ns(event.get("ts")), template, data)

    def _open_span(  # noqa: PLR0915 - one frame per run (hot)
        self,
        run_id: str,
        parent_run_id: str | None,
        start_ns: int,
        template: _Template,
        data: dict[str, Any],
        run_text: bytes = b"",
    ) -> None:
        """Open the span of a run started at ``start_ns``; ``data``: its start's (parsed), for
        an application parent; ``run_text``: the run id's 36 bytes in the line, if read there."""
        run_bytes = None
        if run_text:
            try:
                run_bytes = _UNHEXLIFY(run_text.replace(b"-", b""))  # _uuid_bytes, from the bytes
            except ValueError:
                pass  # not hex and dashes alone: _uuid_bytes decides
        if run_bytes is None or len(run_bytes) != 16:
            run_bytes = _uuid_bytes(run_id)
        hasher = _BLAKE2B_8.copy()  # _span_id(run_bytes), without its frame
        hasher.update(run_bytes)
        span_id = hasher.digest()
        if span_id == _ZERO_ID:
            span_id = _span_id(run_bytes)
        people = template.people
        placed: bytes | None = None  # the attribute of a run placed by _home
        if parent_run_id is None:
            # A root inside an application span: that span's trace, as its child.
            parent = data.get(OTEL_PARENT) if data else None  # a known start's data: empty
            trace_id, parent_span_id = (parent is not None and _application_parent(parent)) or (
                run_bytes,
                None,
            )
        else:
            known = self._ids.get(parent_run_id)
            if known is None and template.tracker is not None:
                # A parent never seen, started while one root of its tracker is open: in that
                # root's trace, under its innermost open run (_home).
                known = self._home(template.tracker, parent_run_id)
                if known is not None:
                    placed = pb.span_attribute(PARENT_INFERRED, parent_run_id)
            # A parent never seen otherwise (recorded by another tracker, or filtered out):
            # its children still share one trace, named after it.
            trace_id = known[0] if known is not None else trace_id_of(parent_run_id)
            parent_span_id = known[1] if known is not None else span_id_of(parent_run_id)
            if known is not None and people is not known[2] and people != known[2]:  # () is ()
                if not people:
                    people = known[2]  # the trace's session and user, on every span
                else:  # key by key: its own win, the trace's fill in the others
                    people, new = _merged(people, known[2])
                    if new:
                        self._spread(trace_id, new)  # set below the root: its open spans take it too
        if run_text and run_text.isascii():
            run_attribute = _RUN_ID_ATTRIBUTE + run_text  # its text is run_id's
        elif len(run_id) == 36 and run_id.isascii():
            run_attribute = _RUN_ID_ATTRIBUTE + run_id.encode()
        else:
            run_attribute = pb.span_attribute("langchain.run_id", run_id)
        size = template.size + len(run_attribute)
        for attribute in people:
            size += len(attribute)
        span: _Open = _new_open(_Open)
        if parent_span_id:  # pb.span_head
            span.head = b"".join(
                (b"\x0a\x10", trace_id, b"\x12\x08", span_id, b"\x22\x08", parent_span_id, template.name_kind)
            )
        else:
            span.head = b"".join((b"\x0a\x10", trace_id, b"\x12\x08", span_id, template.name_kind))
        span.span_id = span_id
        span.start_ns = span.last_ns = start_ns
        span.template = template
        span.attributes = [*template.described.attributes, run_attribute, *template.common, *people]
        if placed is not None:
            span.attributes.append(placed)
            size += len(placed)
        span.events = _NO_EVENTS  # a list of its own at its first event
        span.first_chunk_ns = span.chunks = 0
        span.stream_key = b""
        span.size = size
        span.links = b""
        open_runs = self._open
        # A run of a tracker kept as a tree (_track): registered under its open parent of
        # its tracker (a run placed by _home has none: it is no one's home), a root under
        # its tracker's node.
        span.kids = span.up = None
        tracker = template.tracker
        if tracker is not None and self._trackers:
            up = self._trackers.get(tracker)
            if up is not None and parent_run_id is not None:
                up = open_runs.get(parent_run_id)
                if up is not None and up.template.tracker != tracker:
                    up = None
            if up is not None:
                _register(span, run_id, up)
        open_runs[run_id] = span
        ids = self._ids
        ids[run_id] = (trace_id, span_id, people)
        if len(ids) > _KNOWN_IDS and len(ids) > _KNOWN_IDS + len(open_runs):  # the first: cheap
            # Forget the oldest ended runs (a dict keeps insertion order).
            for old in list(ids)[: len(ids) // 8]:
                if old not in open_runs:
                    del ids[old]
        self.open_bytes += span.size

    def _home(self, tracker: str, parent_run_id: str) -> tuple[bytes, bytes, tuple[bytes, ...]] | None:
        """Where a run of ``tracker`` whose parent ``parent_run_id`` was never seen goes: the
        ids of the innermost open run of the tracker's one open root (as ``asynctrack show``
        places it by time); ``None`` when no root of the tracker is open, or more than one
        (concurrent requests: no guess). A parent's later children go where its first one
        went (in one trace, whatever roots are open now): under the same run while it is
        open, else under its root's innermost open run, while that root is open; after the
        root ended (the parent cannot have been inside it), decided again.

        The innermost: from the root down, while exactly one open run of the tracker is a
        child of the last one. A run placed so is no one's home (a model call: a sibling
        started while it runs is not its child). O(depth): the open runs are kept as a
        tree (``_Open.up`` and ``kids``).
        """
        inferred = self._inferred
        home_of = inferred.get(parent_run_id)
        if home_of is not None:
            home_run, root_run = home_of
            if not home_run:
                return None  # its first child was not placed
            open_runs = self._open
            root = open_runs.get(root_run)
            if root is not None:
                if home_run not in open_runs:  # ended: the root's innermost open run now
                    home_run = self._innermost(root, root_run)
                known = self._ids.get(home_run)
                if known is not None:
                    return known
            del inferred[parent_run_id]  # its root ended: forgotten
        node = self._trackers.get(tracker) or self._track(tracker)
        roots = node.kids
        if roots is None:
            return None  # no root of the tracker open since it is kept (given to models only)
        if len(roots) != 1:
            inferred[parent_run_id] = _NOT_PLACED  # its later children are not placed either
            if len(inferred) > _INFERRED:
                del inferred[next(iter(inferred))]
            return None
        ((root, root_run),) = roots.items()
        run_id = self._innermost(root, root_run)
        known = self._ids.get(run_id)
        if known is not None:
            inferred[parent_run_id] = (run_id, root_run)
            if len(inferred) > _INFERRED:
                del inferred[next(iter(inferred))]
        return known

    @staticmethod
    def _innermost(home: _Open, run_id: str) -> str:
        """The run id of the innermost open run of ``home`` (of run ``run_id``): from it down,
        while exactly one open run of its tracker is a child of the last one (_home)."""
        kids = home.kids
        while kids and len(kids) == 1:
            ((home, run_id),) = kids.items()
            kids = home.kids
        return run_id

    def _track(self, tracker: str) -> _Open:
        """Keep the runs of ``tracker`` as a tree from now on (its first run whose parent
        was never seen: a tracker with none costs nothing): its node, its open runs
        registered (a run's parent found by the parent span id in its head; a run placed
        by _home, marked, under no one). Once per tracker: O(open runs)."""
        trackers = self._trackers
        if len(trackers) >= _TRACKERS:  # forget the trackers with no root open
            for name in [name for name, old in trackers.items() if not old.kids]:
                del trackers[name]
        node = trackers[tracker] = _new_open(_Open)
        node.kids = None
        runs = [(run_id, span) for run_id, span in self._open.items() if span.template.tracker == tracker]
        homes: dict[bytes, _Open] = {}
        for _run_id, span in runs:
            span.kids = span.up = None
            if not any(_INFERRED_KEY in attribute[:40] for attribute in span.attributes):
                homes[span.span_id] = span
        for run_id, span in runs:
            head = span.head  # pb.span_head: its span id at 20, its parent span id's field at 28
            if span.template.root:
                up: _Open | None = node
            elif homes.get(span.span_id) is span and head[28:30] == _PARENT_FIELD:
                up = homes.get(head[30:38])
            else:
                up = None
            if up is not None:
                _register(span, run_id, up)
        return node

    @staticmethod
    def _leave(kids: dict[_Open, str]) -> None:
        """The open children of a run that ended first (evicted): no one's now."""
        for kid in kids:
            kid.up = None

    def _spread(self, trace_id: bytes, people: tuple[bytes, ...]) -> None:
        """A session or user first set below the root of ``trace_id`` (a nested runnable's
        metadata): the trace's open spans without it (its ancestors, siblings running)
        take it, key by key, and so the runs they start later. Spans already ended cannot:
        they were sent. Once per key and trace, over the open runs."""
        ids = self._ids
        for run_id, span in self._open.items():
            if span.head[2:18] == trace_id:
                known = ids.get(run_id)
                if known is not None:
                    had = set(map(_person_key, known[2]))
                    added = tuple(attribute for attribute in people if _person_key(attribute) not in had)
                    if added:
                        size = sum(map(len, added))
                        ids[run_id] = (known[0], known[1], known[2] + added)
                        span.attributes += added
                        span.size += size
                        self.open_bytes += size

    def _start_data(
        self, kind: str, name: str, root: bool, raw: dict[str, Any] | bytes, tail: bytes
    ) -> tuple[dict[str, Any], Described | None, tuple[Any, ...] | None, bool]:
        """A start's data, as much as its span needs; for a model start read in parts, its
        description if known, else the key to keep it under; and whether data without its
        content parsed (or was described before) from the cut made in its text.

        A model start's description depends on data without its content, the name, the
        metadata (in ``tail``) and being a root: the same text is described once.
        """
        if not isinstance(raw, bytes):
            return raw, None, None, False
        cut = _without_content(raw) if tail and kind in _MODEL_STARTS else None
        if cut is not None:
            known_as = (kind, name, root, cut, tail)
            described = self._described.get(known_as)
            if described is not None:
                return {}, described, None, True  # only texts without an application parent are kept
        if cut is not None and _OTEL_PARENT_KEY not in cut:
            try:
                data = orjson.loads(cut)
            except orjson.JSONDecodeError:
                data = None  # not data's own content key: parsed whole, not kept
            if type(data) is dict:
                return data, None, known_as, True
        needed = kind in _DATA_KINDS or (root and _OTEL_PARENT_KEY in raw)
        return (_data(raw, kind) if needed else {}), None, None, False

    def _common(self, event: Mapping[str, Any]) -> list[bytes]:
        """The attributes after the run id: experiment and run names, sampling, tags."""
        attrs: list[bytes] = []
        names = (event.get("experiment"), event.get("run"))
        hashable = type(names[0]) in _NAME_TYPES and type(names[1]) in _NAME_TYPES
        found = self._names.get(names) if hashable else None
        if found is None:
            found = tuple(
                pb.span_attribute(name, value)
                for name, value in zip(("asynctrack.experiment", "asynctrack.run"), names, strict=True)
                if isinstance(value, str)
            )
            if hashable and len(self._names) < 64:
                self._names[names] = found
        attrs.extend(found)
        tags = event.get("tags")
        if event.get("sampled") is False:  # kept for a failed run, not by the sample
            attrs.append(pb.span_attribute("asynctrack.sampled", False))
        if type(tags) is list and tags:
            tags_key = tuple(tags) if len(tags) <= 8 else None
            tag_attribute = self._tags.get(tags_key) if tags_key is not None else None
            if tag_attribute is None:
                tag_attribute = tags_attribute(tags)
                if tags_key is not None and tag_attribute is not None and len(self._tags) < 1024:
                    self._tags[tags_key] = tag_attribute
            if tag_attribute is not None:
                attrs.append(tag_attribute)
        return attrs

    def _end(
        self, run_id: str, kind: str, event: Mapping[str, Any], raw: dict[str, Any] | bytes
    ) -> bytes | None:
        span = self._open.pop(run_id, None)
        ts = event.get("ts")
        end_ns = int(ts * 1e9) if type(ts) is float else _ns(ts)
        data = raw if isinstance(raw, dict) else _data(raw, kind) if kind in _DATA_KINDS else {}
        if span is None:
            if run_id in self._evicted:
                del self._evicted[run_id]
                self.late_ends += 1
                return None
            span = self._rebuild(run_id, kind, event, data, end_ns)
        else:
            self.open_bytes -= span.size
        return self._finish(span, kind, data, end_ns)

    def _finish(  # noqa: PLR0915 - one frame per run (hot)
        self, span: _Open, kind: str, data: dict[str, Any], end_ns: int, ended: Ended | None = None
    ) -> bytes:
        """The span of a run that ended (``kind``, ``data``) at ``end_ns``, encoded;
        ``ended``: what its end says, if read already (an ``llm_end``: its attributes are
        in ``span.attributes`` already)."""
        if span.stream_key:
            del self._streams[span.stream_key]
            span.stream_key = b""
        up = span.up
        if up is not None:  # out of the tree _home looks at
            del up.kids[span]  # type: ignore[union-attr]  # registered: its parent has kids
            if span.kids:
                self._leave(span.kids)
        attributes = span.attributes
        status, message = pb.STATUS_UNSET, ""
        events = span.events
        kind_name: str | None = None
        if ended is not None:
            pass  # _model_end added its attributes to the span's
        elif kind in _ERROR:
            status, message, kind_name, events = _failed(data.get("error"), end_ns, attributes, events)
        elif kind == "llm_end" or self.capture_content:
            ended = (
                llm_end(data, self.capture_content)
                if kind == "llm_end"
                else describe_end(kind, data, capture=True)
            )
            attributes += ended[0]
        first_chunk = None
        chunks = span.chunks
        if chunks:
            attributes.append(_STREAMED)
            attributes.append(_CHUNKS.get(chunks) or _chunks(chunks))
            if span.first_chunk_ns:
                first_chunk = (span.first_chunk_ns - span.start_ns) / 1e9
                if first_chunk < 0.0:  # noqa: PLR1730 - max(first_chunk, 0.0), without the call
                    first_chunk = 0.0
                attributes.append(_FIRST_CHUNK + _DOUBLE(first_chunk))
        metrics = self.metrics
        template = span.template
        if metrics is not None and template.metric_key is not None:
            model = ended[1] if ended is not None else None
            try:
                found = template.series[model]  # the series kept for the model, nearly always
            except KeyError:
                found = None
            if found is not None and found[0] is metrics:
                series = found[1]
            else:
                key = template.metric_key
                series = metrics.series(key if model is None else (*key, ("gen_ai.response.model", model)))
                if len(template.series) < 8:
                    template.series[model] = (metrics, series)
            metrics.model_call(
                series, span.start_ns, end_ns, kind_name, ended[2] if ended is not None else None, first_chunk
            )
        start_ns = span.start_ns
        end_ns = end_ns if end_ns > start_ns else start_ns
        if events or status:
            encoded = pb.span_of(span.head, start_ns, end_ns, attributes, events, status, message)
        else:
            encoded = b"".join([span.head, _TIMES(0x39, start_ns, 0x41, end_ns), *attributes])  # pb.span_of
        return encoded + span.links if span.links else encoded

    def _rebuild(
        self, run_id: str, kind: str, event: Mapping[str, Any], data: dict[str, Any], end_ns: int
    ) -> _Open:
        """A span from its end event alone (its start was not recorded)."""
        start_kind = kind.rsplit("_", 1)[0] + "_start"
        if start_kind == "llm_start" and _is_chat(data):
            start_kind = "chat_model_start"
        duration = event.get("duration")
        start_ns = end_ns - _ns(duration)
        self._start(run_id, start_kind, {**event, "ts": start_ns / 1e9}, {})
        span = self._open.pop(run_id)
        self.open_bytes -= span.size
        span.start_ns = start_ns
        span.attributes.append(pb.span_attribute("asynctrack.start_missing", True))
        return span

    def _note(self, run_id: str, kind: Any, event: Mapping[str, Any], raw: dict[str, Any] | bytes) -> None:
        span = self._open.get(run_id)
        if span is None:
            return  # an event of no open run (a legacy tracer's lone event): in the files only
        time_ns = _ns(event.get("ts"))
        span.last_ns = max(span.last_ns, time_ns)
        if kind == "llm_new_token":  # a token line the fast path could not read
            span.chunks += 1
            if not span.first_chunk_ns:
                span.first_chunk_ns = time_ns
            return
        data = raw if isinstance(raw, dict) else _data(raw, kind) if kind in _DATA_KINDS else {}
        attrs: list[bytes] = []
        known = _EVENT_ATTRIBUTES.get(str(kind))
        if known is not None:
            source = data.get("action") if kind == "agent_action" else data
            value = source.get(known[0]) if isinstance(source, Mapping) else None
            if isinstance(value, str | int) and not isinstance(value, bool):
                attrs.append(pb.attribute(known[1], value))
        if kind in GRAPH_KINDS:
            attrs += self._graph_event(run_id, kind, data, span)
        if self.capture_content and data:
            attrs.append(pb.attribute("langchain.data", orjson.dumps(data).decode()))
        encoded = pb.event(time_ns, f"langchain.{kind}", attrs)
        if span.events is _NO_EVENTS:
            span.events = [encoded]
        else:
            span.events.append(encoded)
        span.size += len(encoded)
        self.open_bytes += len(encoded)

    def _graph_event(self, run_id: str, kind: str, data: Mapping[str, Any], span: _Open) -> list[bytes]:
        """A LangGraph interrupt's or resume's attributes: its checkpoint and status (what
        ``interrupt()`` was given is content: in ``langchain.data``, if captured). An
        interrupt's checkpoint is remembered; a resume from it (a new root run, so another
        trace) links its span to the span of the run that paused there."""
        attrs = []
        checkpoint = data.get("checkpoint_id")
        namespace = data.get("checkpoint_ns")
        if isinstance(namespace, list) and all(type(part) is str for part in namespace):
            namespace = "|".join(namespace)  # LangGraph's separator of nested graphs' namespaces
        namespace = namespace if isinstance(namespace, str) else ""
        status = data.get("status")
        if isinstance(checkpoint, str):
            attrs.append(pb.attribute("langgraph.checkpoint.id", checkpoint))
        if namespace:
            attrs.append(pb.attribute("langgraph.checkpoint.ns", namespace))
        if isinstance(status, str):
            attrs.append(pb.attribute("langgraph.status", status))
        interrupts = data.get("interrupts")
        if kind == "graph_interrupt" and isinstance(interrupts, list):
            attrs.append(pb.attribute("langgraph.interrupt.count", len(interrupts)))
            ids = [i["id"] for i in interrupts if isinstance(i, dict) and isinstance(i.get("id"), str)]
            if ids:
                attrs.append(pb.attribute("langgraph.interrupt.ids", ids))
        if not isinstance(checkpoint, str):
            return attrs
        key = (namespace, checkpoint)
        paused = self._paused
        known = self._ids.get(run_id)
        if known is None:
            return attrs
        if kind == "graph_interrupt":
            paused.pop(key, None)
            if len(paused) >= _PAUSED:
                del paused[next(iter(paused))]
            paused[key] = (known[0], known[1])
        else:
            found = paused.get(key)  # kept: a checkpoint may be resumed again (time travel)
            if found is not None and found[1] != known[1]:
                link = pb.link(found[0], found[1], _RESUMED_FROM)
                span.links += link
                span.size += len(link)
                self.open_bytes += len(link)
        return attrs

    def _unfinished(self, run_id: str, why: str) -> bytes:
        span = self._open.pop(run_id)
        self.open_bytes -= span.size
        if span.stream_key:
            del self._streams[span.stream_key]
            span.stream_key = b""
        up = span.up
        if up is not None:
            del up.kids[span]  # type: ignore[union-attr]  # registered: its parent has kids
            if span.kids:
                self._leave(span.kids)
        span.attributes.append(pb.span_attribute("asynctrack.unfinished", why))
        if span.chunks:
            span.attributes.append(pb.span_attribute("asynctrack.stream.chunks", span.chunks))
        encoded = pb.span_of(span.head, span.start_ns, span.last_ns, span.attributes, span.events)
        return encoded + span.links if span.links else encoded

    def _evict(self) -> list[bytes]:
        out = []
        while self.open_bytes > self.max_open_bytes and self._open:
            oldest = next(iter(self._open))
            out.append(self._unfinished(oldest, "evicted"))
            self._evicted[oldest] = None
            if len(self._evicted) > _KNOWN_IDS:
                del self._evicted[next(iter(self._evicted))]
        return out


def _failed(
    error: Any, end_ns: int, attributes: list[bytes], events: list[bytes]
) -> tuple[int, str, str | None, list[bytes]]:
    """An error end's status, message, ``error.type`` and events (``events`` and its
    ``exception`` event: a new list, as ``events`` may be the shared ``_NO_EVENTS``); its
    attributes added. LangGraph's GraphInterrupt is no error: a paused graph is no
    failure to alert on, and what ``interrupt()`` was given (the error's message) is
    content, on the graph span's ``langchain.graph_interrupt`` event if captured."""
    if is_interrupt(error):
        attributes.append(_INTERRUPTED)
        return pb.STATUS_UNSET, "", None, events
    error = error if isinstance(error, Mapping) else {}
    message = str(error.get("message") or "")
    kind_name = error_type(error)
    attributes.append(pb.span_attribute("error.type", kind_name))
    exception = [pb.attribute("exception.type", kind_name)]
    if message:
        exception.append(pb.attribute("exception.message", message))
    if isinstance(error.get("traceback"), str) and error["traceback"]:
        exception.append(pb.attribute("exception.stacktrace", error["traceback"]))
    return pb.STATUS_ERROR, message, kind_name, [*events, pb.event(end_ns, "exception", exception)]


def _split(line: bytes, tails: dict[bytes, dict[str, Any]]) -> tuple[dict[str, Any], bytes, bytes] | None:
    """A line of the writer's layout in parts: its fields but ``data`` parsed, the text of
    ``data``, and the text of the fields after it; ``None`` for a line of another layout
    (module docstring).

    The fields after data (tags and metadata) repeat from call to call: they are parsed
    once per text and kept in ``tails`` (read, never changed).
    """
    at = line.find(_DATA_AT)
    end = line.rfind(_TAGS_AT)
    if at < 0 or end < at:
        return None
    tail = line[end + 1 :]
    after = tails.get(tail)
    try:
        event = orjson.loads(line[:at] + b"}")
        if after is None:
            after = orjson.loads(b"{" + tail[1:])
            if type(after) is dict and len(tail) <= _TAIL_KEPT and len(tails) < _TAILS:
                tails[tail] = after
    except orjson.JSONDecodeError:
        return None
    if type(event) is not dict or type(after) is not dict:
        return None
    event.update(after)
    return event, line[at + 8 : end + 1], tail


def _without_content(text: bytes) -> bytes | None:
    """A model start's ``data`` text without its content (the last field), closed; ``None``
    if there is none to cut."""
    if text.endswith(b"]}"):
        for key in _LAST_OF_DATA:
            at = text.rfind(key)
            if at > 0:
                return text[:at] + b"}"
    return None


def _data(text: bytes, kind: str) -> dict[str, Any]:
    """``data`` parsed from its text; a model start's content (written last) cut off first."""
    cut = _without_content(text) if kind in _MODEL_STARTS else None
    if cut is not None:
        try:
            data = orjson.loads(cut)
        except orjson.JSONDecodeError:
            pass  # the key was not data's own (a cut inside a value): parse it all
        else:
            return data if type(data) is dict else {}
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return data if type(data) is dict else {}


def _application_parent(parent: Any) -> tuple[bytes, bytes] | None:
    """The trace id and span id of the application span recorded with a root, if valid."""
    if not isinstance(parent, dict):
        return None
    try:
        trace_id = bytes.fromhex(parent["trace_id"])
        span_id = bytes.fromhex(parent["span_id"])
    except (KeyError, TypeError, ValueError):
        return None
    if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id) or not any(span_id):
        return None
    return trace_id, span_id


def _people(metadata: Mapping[str, Any]) -> tuple[bytes, ...]:
    """``session.id``, ``gen_ai.conversation.id`` and ``user.id`` from a run's metadata.

    LangChain's ``session_id`` and ``user_id`` keys, and LangGraph's ``thread_id`` (a
    graph's ``configurable`` keys are copied into its runs' metadata): a session is a
    conversation, so both names carry it (``session_id`` first for ``session.id``,
    ``thread_id`` first for the conversation).
    """
    if not metadata or (
        "session_id" not in metadata and "thread_id" not in metadata and "user_id" not in metadata
    ):
        return ()
    session, thread, user = (
        id_text(metadata.get("session_id")),
        id_text(metadata.get("thread_id")),
        id_text(metadata.get("user_id")),
    )
    out = []
    if session is not None:
        out.append(pb.common_span_attribute("session.id", session))
    if thread is not None:
        out.append(pb.common_span_attribute("gen_ai.conversation.id", thread))
        if session is None:
            out.append(pb.common_span_attribute("session.id", thread))
    elif session is not None:
        out.append(pb.common_span_attribute("gen_ai.conversation.id", session))
    if user is not None:
        out.append(pb.common_span_attribute("user.id", user))
    return tuple(out)


def _person_key(attribute: bytes) -> bytes:
    """The key of one of ``_people()``'s attributes: after the field's tag, its length (a
    varint) and the key's tag and length (one byte: the key is short)."""
    at = 1
    while attribute[at] & 0x80:
        at += 1
    return attribute[at + 3 : at + 3 + attribute[at + 2]]


def _merged(
    own: tuple[bytes, ...], inherited: tuple[bytes, ...]
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """A run's session and user attributes: its ``own``, and its parent's (``inherited``)
    of the keys it has none of; and those of its own of the keys its parent has none of."""
    own_keys = set(map(_person_key, own))
    inherited_keys = set(map(_person_key, inherited))
    merged = own + tuple(attribute for attribute in inherited if _person_key(attribute) not in own_keys)
    return merged, tuple(attribute for attribute in own if _person_key(attribute) not in inherited_keys)


def _is_chat(data: Mapping[str, Any]) -> bool:
    response = data.get("response")
    generations = response.get("generations") if isinstance(response, Mapping) else None
    try:
        return generations[0][0].get("type") == "ChatGeneration"  # type: ignore[index,no-any-return]
    except (TypeError, IndexError, KeyError, AttributeError):
        return False
