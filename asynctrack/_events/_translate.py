"""Records -> redacted JSON lines, and the run's parameters: ``EventTranslator`` (worker side).

Everything here runs on the worker side, so it may keep state without locks: the
names and start times of open runs (for ``name`` and ``duration`` on end events),
the tail of each run's token stream, and the run's parameters. The record's shape
is in ``_schema``.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import uuid
from collections.abc import Sequence
from itertools import compress, islice, repeat
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._config import TrackerConfig
from .._errors import error_fields
from .._redact import StreamRedactor
from .._redact._redactor import filled_templates
from .._sampling import SAMPLED_APART
from .._sinks._base import RunSummary
from ._encode import SPLICE as _SPLICE
from ._encode import Encoder, TranslateFailed
from ._parameters import RunParameters
from ._schema import (
    BODY,
    ENDS,
    EXTRA,
    KIND,
    NAME,
    PARENT_RUN_ID,
    RUN_ID,
    SEQ,
    STARTS,
    TS,
    id_value,
    uuid_text,
)
from ._stream import ARGS, BLOCK_TOKEN, TOOL_CALL_CHUNKS, mask_token, stream_blocks, stream_tool_args

if TYPE_CHECKING:
    from .._pipeline._loop import Line

__all__ = ["EventTranslator"]

_MAX_OPEN_RUNS: Final = 100_000
_KIND: Final = operator.itemgetter(KIND)
_SEQ: Final = operator.itemgetter(SEQ)
_TS: Final = operator.itemgetter(TS)
_RUN: Final = operator.itemgetter(RUN_ID)
_PARENT: Final = operator.itemgetter(PARENT_RUN_ID)
_NAME: Final = operator.itemgetter(NAME)
_BODY: Final = operator.itemgetter(BODY)
_EXTRA: Final = operator.itemgetter(EXTRA)
_AFTER_DATA: Final = operator.itemgetter(slice(_SPLICE, None))  # a body's fields of data
_AT_SPLICE: Final = operator.itemgetter(_SPLICE)
_CLOSED: Final = 0x7D  # '}' where data's fields start: data is empty
_TOKEN: Final = "llm_new_token"
#: The envelope of a placeholder line for a record that could not be translated.
_PLACEHOLDER_ENVELOPE: Final = (
    "seq",
    "ts",
    "kind",
    "experiment",
    "run",
    "tracker",
    "run_id",
    "parent_run_id",
    "name",
    "duration",
)
_PARAMETER_KINDS: Final = frozenset({"llm_start", "chat_model_start", "llm_end"})

#: The last member of ``data`` in a model start's body, and where the body's metadata starts.
_LAST_OF_DATA: Final = {"chat_model_start": b',"messages":[', "llm_start": b',"prompts":['}
_METADATA: Final = b',"metadata":'
_LLM_OUTPUT: Final = b',"llm_output":'
_AFTER_LLM_OUTPUT: Final = b',"run":'  # LLMResult's member after llm_output
_NULL_LLM_OUTPUT: Final = len(_LLM_OUTPUT) + len(b"null")  # its length when it is null
_MAX_CALLS_SEEN: Final = 1024  # distinct model-call parameter texts remembered
_RECENT_CALLS: Final = 4  # ... of which the last ones are compared in place (_model_call)
_MAX_TOKEN_HEADS: Final = 4096  # streaming runs whose envelope is remembered (then it starts over)


class _Row:
    """A row of streamed tokens that ``many`` writes as they are, in C loops: consecutive
    records of one run (the same run id, parent and name), and their tokens' JSON text."""

    __slots__ = ("records", "texts")

    def __init__(self, records: Sequence[Sequence[Any]], texts: list[bytes]) -> None:
        self.records = records
        self.texts = texts


class EventTranslator:
    """Turns handler records into JSON lines; one per tracker, worker side only.

    Built from plain arguments (``experiment``, ``run``, ``writer``, ``config``), so
    that it can be built wherever the worker runs.

    Attributes:
        encoder: the ``Encoder`` (its ``placeholders`` counts events written with
            a placeholder for a value that failed at capture).
    """

    def __init__(
        self,
        *,
        experiment: str,
        run: str,
        writer: str,
        config: TrackerConfig,
    ) -> None:
        self.experiment = experiment
        self.run = run
        self.writer = writer
        self.encoder = Encoder(config)
        self._redactor = self.encoder.redactor
        self._streams = StreamRedactor(self._redactor.text, self._redactor.key_rule)
        #: Set by prepare() for many() of the same records: the chunk's records with its
        #: planned rows of streamed tokens in their place (``_Row``), and the tokens of
        #: clean runs written one at a time (by id; the records live while many() runs).
        self._planned: Sequence[Sequence[Any]] | None = None
        self._steps: list[Any] = []
        self._streamed: dict[int, Sequence[Any]] = {}
        self._last_call: tuple[Any, Any] | None = None
        self._calls_seen: set[tuple[bytes, bytes]] = set()
        #: The last of them, the newest first (a round of calls alternates between a few).
        self._recent_calls: list[tuple[bytes, bytes]] = []
        self._hook = config.redact
        # Parameter keys judged as the lines' keys are (KeyRule: normalized words), and
        # a key holding a credential's format is left out with its value.
        rule = self._redactor.key_rule if config.redact_keys else None
        text = self._redactor.text
        self.parameters = RunParameters(lambda key: (rule is not None and rule(key)) or text(key) != key)
        self._open: dict[Any, tuple[str | None, float]] = {}
        # Sampling: a run whose parent this tracker never saw is decided on that parent's id,
        # apart from any root; its start line says so (SAMPLED_APART).
        self._apart = config.sample_rate < 1.0
        #: The envelope of a run's streamed tokens after ``seq`` and ``ts`` (the same for
        #: every token of the run), by (run id, parent run id, name): see ``many``.
        self._token_heads: dict[tuple[int, int | None, str | None], bytes] = {}

    @property
    def placeholders(self) -> int:
        """Events written with a placeholder for a value that could not be captured."""
        return self.encoder.placeholders

    def prepare(self, records: Sequence[Sequence[Any]], /) -> None:
        """Pre-check the bodies of a chunk of records at once (see ``Redactor.prepare``),
        and plan how ``many`` writes the chunk's streamed tokens."""
        self._planned = None
        self._streamed = {}
        kinds = list(map(_KIND, records))
        if _TOKEN in kinds:
            self._prepare_tokens(records, kinds)
            return
        bodies = list(map(_BODY, records))
        if all(map(bytes.__instancecheck__, bodies)):
            leads = None
            if not _LAST_OF_DATA.keys().isdisjoint(kinds):
                # A model start's description, before its prompts or messages, is the
                # same at every call of the model (see Redactor.prepare).
                leads = [
                    b.find(_LAST_OF_DATA[k]) if k in _LAST_OF_DATA else None
                    for k, b in zip(kinds, bodies, strict=True)
                ]
            self.encoder.prepare(bodies, leads)
        else:
            self.encoder.prepare([b for b in bodies if type(b) is bytes])

    def _prepare_tokens(self, records: Sequence[Sequence[Any]], kinds: list[str]) -> None:  # noqa: PLR0915 - one frame a chunk
        """``prepare`` of a chunk holding streamed tokens.

        The chunk is cut where the kind, run, parent or name changes: a streamed call's
        tokens come in rows (one run's, in a row). Python runs per row, C loops per
        token: a row's tokens as JSON text, its bodies compared with its first body's
        template filled with their token (``filled_templates``: the redactor then judges
        them by their token alone), its tokens joined to its run's stream. A row of a
        run whose stream is clean, every body plain (nothing to redact, no placeholder,
        ``data`` not empty, no tool call streamed), its ids ints (as the worker process
        receives them), is written by ``many`` as it is, a row at a time; the tokens of
        other clean runs' rows are written one at a time, as they are
        (``self._streamed``).
        """
        n = len(records)
        bodies = list(map(_BODY, records))
        runs = list(map(_RUN, records))
        parents = list(map(_PARENT, records))
        names = list(map(_NAME, records))
        extras = list(map(_EXTRA, records))
        keys = list(zip(kinds, runs, parents, names, strict=True))
        cuts = [0, *compress(range(1, n), map(operator.ne, keys, islice(keys, 1, None))), n]
        judged: list[bytes] = []  # the bodies the redactor looks at one by one ...
        shared: list[bytes | int | None] = []  # ... and what each shares (Redactor.prepare)
        filled: list[bytes] = []  # token bodies known to be a judged body's template filled
        fillers: list[bytes] = []  # ... with these tokens (JSON text)
        streams: dict[Any, list[str]] = {}
        blocks = set()
        rows: list[tuple[int, int, Any, list[bytes] | None]] = []
        dumps = orjson.dumps
        UUID = uuid.UUID
        for start, end in itertools.pairwise(cuts):
            kind = kinds[start]
            if kind != _TOKEN:
                for body in bodies[start:end]:
                    if type(body) is bytes:
                        judged.append(body)
                        shared.append(body.find(_LAST_OF_DATA[kind]) if kind in _LAST_OF_DATA else None)
                continue
            run = runs[start]
            if type(run) is UUID:
                run = run.int
            group = bodies[start:end]
            strs = extras[start:end]
            texts: list[bytes] | None = None
            if all(map(str.__instancecheck__, strs)) and all(map(bytes.__instancecheck__, group)):
                try:
                    texts = list(map(dumps, strs))
                except orjson.JSONEncodeError:  # a lone surrogate: those one by one below
                    pass
            if texts is None:
                for body, extra in zip(group, strs, strict=True):
                    if type(extra) is not str:
                        blocks.add(run)  # content blocks: not their bodies (their "token" key is ours)
                        continue
                    streams.setdefault(run, []).append(extra)
                    if type(body) is bytes:
                        text = None
                        try:
                            text = dumps(extra)
                        except orjson.JSONEncodeError:  # a lone surrogate: none
                            pass
                        judged.append(body)
                        shared.append(text)
                rows.append((start, end, run, None))
                continue
            tokens = streams.get(run)
            if tokens is None:
                streams[run] = strs
            else:
                tokens += strs
            judged.append(group[0])
            shared.append(texts[0])
            same = filled_templates(group, texts) if end - start > 1 else None
            if same is None:
                judged += group[1:]
                shared += texts[1:]
            elif all(same):
                filled += group[1:]
                fillers += texts[1:]
                group = group[:1]
            else:
                filled += compress(group[1:], same)
                fillers += compress(texts[1:], same)
                other = list(map(operator.not_, same))
                group = [group[0], *compress(group[1:], other)]
                judged += group[1:]
                shared += compress(texts[1:], other)
            # A tool call streamed in the row (a search of each body: rfind, which reads
            # fewer bytes a step here than find):
            # the bodies filled from the first one's template have one if it has one
            # (the raw text of one never lies inside a token's JSON string).
            calls = max(map(bytes.rfind, group, repeat(TOOL_CALL_CHUNKS))) != -1
            rows.append((start, end, run, None if calls else texts))
        self.encoder.prepare(judged, shared, filled, fillers)
        for run in blocks:  # content blocks join the run's stream in order, in many()
            streams.pop(run, None)
        # A clean run's tail moves past its tokens now; many() writes them as they are.
        clean = self._streams.clean(streams, self._redactor.may_match) if streams else set()
        encoder = self.encoder
        if not clean:
            encoder.keep_filled()  # written one by one
            return
        plain = encoder.plain
        # Every body is plain (bodies are distinct; the filled ones left out of plain if so).
        every = encoder.filled_plain or len(plain) == len(judged) + len(filled)
        fast = self._hook is None
        streamed = self._streamed
        steps: list[Any] = []
        done = made = 0
        for start, end, run, texts in rows:
            if run not in clean:
                continue
            group = bodies[start:end]
            parent, name = parents[start], names[start]
            if (
                fast
                and texts is not None
                and type(runs[start]) is int
                and (parent is None or type(parent) is int)
                and (name is None or type(name) is str)
                and (every or all(map(plain.__contains__, map(id, group))))
                and _CLOSED not in map(_AT_SPLICE, group)  # data is not empty
            ):
                steps += records[done:start]
                steps.append(_Row(records[start:end], texts))
                done = end
                made += 1
            else:
                row = records[start:end]
                streamed.update(zip(map(id, row), row, strict=True))
        if made < len(rows):  # some tokens written one by one
            encoder.keep_filled()
        if steps:
            steps += records[done:]
            self._steps = steps
            self._planned = records

    def __call__(self, record: Sequence[Any], /) -> Line | None:
        """One record as ``(seq, line, kind, run id)`` (see ``many``), or ``None`` if the
        ``redact`` hook dropped it."""
        out = self.many((record,))[0]
        if isinstance(out, TranslateFailed):
            raise out.cause
        if isinstance(out, Exception):
            raise out
        return out

    def _failed(self, record: Sequence[Any], exc: Exception) -> TranslateFailed:
        """``exc`` (what stopped ``record``), with the envelope of the worker's placeholder
        line for it: this tracker's names, and the record's ``seq``, ``ts``, ids and kind
        as far as they can be read and written (a field that cannot is ``None``)."""
        envelope: dict[str, Any] = dict.fromkeys(_PLACEHOLDER_ENVELOPE)
        envelope.update(kind="unknown", experiment=self.experiment, run=self.run, tracker=self.writer)
        kind = None
        try:
            kind, seq, ts, run_id, parent_run_id = record[:5]
            if type(seq) is int:
                envelope["seq"] = seq
            if type(ts) is float or type(ts) is int:
                envelope["ts"] = ts
            for field, value in (("run_id", run_id), ("parent_run_id", parent_run_id)):
                with contextlib.suppress(Exception):
                    text = uuid_text(value) if type(value) is int else id_value(value)
                    orjson.dumps(text)
                    envelope[field] = text
        except Exception:  # not a record: the names alone
            pass
        return TranslateFailed(exc, envelope, kind if type(kind) is str else None)

    def many(  # noqa: C901, PLR0915 - the worker's hot loop: one frame per chunk, on purpose
        self, records: Sequence[Sequence[Any]]
    ) -> list[Line | Exception | None]:
        """Each record as ``(seq, line, kind, run id)``, ``None`` (dropped by the ``redact``
        hook) or the exception that stopped it, as a ``TranslateFailed`` (the caller
        counts it and writes a placeholder line with the envelope that holds). The kind
        and the run id are the line's own ``kind`` and ``run_id`` (what
        ``RecordExporter.records`` is told, so that it need not read them from the
        line); with a ``redact`` hook, which may change any field, the result is
        ``(seq, line)`` alone.

        The worker's hot loop: one Python frame per chunk, not four per record. A body
        that ``prepare()`` found plain (nothing to redact, no placeholder) is spliced
        behind its envelope as it is; any other goes through ``Encoder.assemble``. A row
        of streamed tokens that ``prepare()`` planned (of the same ``records``) is written
        in C loops: a token's envelope is its run's but for ``seq`` and ``ts``, which come
        first, written once per run (``_token_head``).
        """
        out: list[Line | Exception | None] = []
        append = out.append
        encoder = self.encoder
        splice = encoder.splice
        plain = encoder.plain
        streams = self._streams
        streamed = self._streamed
        open_runs = self._open
        parameters = self.parameters
        # The kinds counted, added to the run's counts once per chunk: a Counter's item
        # assignment is a Python-level slot (it defines __delitem__), ~1,000 instructions.
        counted: list[str] = []
        count = counted.append
        redact_name = self._redactor.text
        names = self._redactor.texts  # its cache: a name seen before costs no call
        hook = self._hook
        dumps = orjson.dumps
        token_heads = self._token_heads
        experiment, run_name, writer = self.experiment, self.run, self.writer
        apart = self._apart
        for step in self._steps if records is self._planned else records:
            if type(step) is _Row:
                row = step.records
                _, _, _, run_id, parent_run_id, name, _, _ = row[0]
                if name is None:
                    opened = open_runs.get(run_id)
                    if opened is not None:
                        name = opened[0]
                if name is None or type(name) is str:
                    key = (run_id, parent_run_id, name)
                    head = token_heads.get(key) or self._token_head(key)
                    mark = len(out)
                    try:
                        seqs = list(map(_SEQ, row))
                        # The row's seqs and times as JSON in one call each: orjson writes a
                        # list's numbers as it writes each alone, ',' between, no spaces
                        # (anything else, a ',' in one: one record at a time below).
                        seq_texts = dumps(seqs)[1:-1].split(b",")
                        ts_texts = dumps(list(map(_TS, row)))[1:-1].split(b",")
                        if len(seq_texts) != len(row) or len(ts_texts) != len(row):
                            raise ValueError("not one number a record")
                        fields = zip(
                            repeat(b'{"seq":'),
                            seq_texts,
                            repeat(b',"ts":'),
                            ts_texts,
                            repeat(head),
                            step.texts,
                            repeat(b","),
                            map(_AFTER_DATA, map(_BODY, row)),
                            repeat(b"\n"),
                        )
                        lines = map(b"".join, fields)
                        out += zip(seqs, lines, repeat(_TOKEN), repeat(uuid_text(run_id)), strict=False)
                    except Exception:  # one at a time below, each error its own (never seen)
                        del out[mark:]
                    else:
                        counted += repeat(_TOKEN, len(row))
                        continue
                batch: Sequence[Sequence[Any]] = row
                written = True  # its run's tail moved past its tokens in prepare()
            else:
                batch = (step,)
                written = False
            for record in batch:
                try:
                    kind, seq, ts, run_id, parent_run_id, name, body, extra = record
                    # UUID.__hash__ is Python code; its int hashes in C. A caller's own
                    # id of another type is keyed as it is written (bytearray: hashable).
                    run = run_id
                    if type(run) is not int:
                        run = run.int if type(run) is uuid.UUID else id_value(run)
                    token = None
                    error = None
                    if kind == "llm_new_token":
                        if type(extra) is str:  # the streamed text, redacted joined to the run's stream
                            if written or streamed.get(id(record)) is record:
                                token = extra  # its run's tail moved past it in prepare()
                            else:
                                token = streams.token(run, extra)
                                if token != extra and type(body) is bytes:
                                    # The chunk repeats the token (its text, its message's
                                    # content): the redacted token there too, else the
                                    # fragments of a secret split across tokens are written.
                                    body = mask_token(body, extra, token)
                            if type(body) is bytes and body.find(TOOL_CALL_CHUNKS) != -1:
                                body = stream_tool_args(streams, run, body)
                        elif type(body) is bytes and body.startswith(BLOCK_TOKEN):
                            body = stream_blocks(streams, run, body)  # content blocks: joined too
                            if body.find(TOOL_CALL_CHUNKS) != -1:
                                # Anthropic's models stream each piece of a tool call's
                                # arguments twice: as a block's partial_json and in
                                # tool_call_chunks (joined to the run's arguments, as OpenAI's).
                                body = stream_tool_args(streams, run, body)
                    elif type(extra) is dict and extra.pop("$error", False):
                        error = extra  # formatted where the exception lived (the worker process's client)
                    elif extra is not None:
                        error = error_fields(extra)
                    duration = None
                    if kind in STARTS:
                        if len(open_runs) >= _MAX_OPEN_RUNS:  # runs that never end: forget the oldest
                            open_runs.pop(next(iter(open_runs)))
                        open_runs[run] = (name, ts)
                    elif kind in ENDS:
                        streams.end(run)
                        streams.end((run, ARGS))
                        opened = open_runs.pop(run, None)
                        if opened is not None:
                            name = name or opened[0]
                            duration = ts - opened[1]
                            parameters.ended(kind, duration)
                    elif name is None:
                        opened = open_runs.get(run)
                        if opened is not None:
                            name = opened[0]
                    count(kind)
                    run_text = uuid_text(run_id) if type(run_id) is int else id_value(run_id)
                    if kind in _PARAMETER_KINDS:
                        self._collect(kind, body)
                    envelope = {
                        "seq": seq,
                        "ts": ts,
                        "kind": kind,
                        "experiment": experiment,
                        "run": run_name,
                        "tracker": writer,
                        "run_id": run_text,
                        "parent_run_id": (
                            uuid_text(parent_run_id)
                            if type(parent_run_id) is int
                            else id_value(parent_run_id)
                        ),
                        "name": (names.get(name) or redact_name(name)) if type(name) is str else name,
                        "duration": duration,
                    }
                    if apart and kind in STARTS and parent_run_id is not None:
                        parent = parent_run_id  # keyed as ``run`` is (a bytearray: as its text)
                        if type(parent) is not int:
                            parent = parent.int if type(parent) is uuid.UUID else id_value(parent)
                        if parent not in open_runs:
                            envelope[SAMPLED_APART] = True
                    if error is None and hook is None and type(body) is bytes and plain.get(id(body)) is body:
                        try:
                            head = dumps(envelope)
                        except orjson.JSONEncodeError:  # a lone surrogate in a name
                            head = encoder.head(envelope)
                        # encoder.splice(head, body[, token]), inlined: the common cases.
                        if token is None:
                            append((seq, b"".join((head[:-1], b",", body[1:], b"\n")), kind, run_text))
                        elif body[_SPLICE] != 0x7D and type(token) is str:  # data is not empty
                            try:
                                text = dumps(token)
                            except orjson.JSONEncodeError:  # a lone surrogate
                                append((seq, splice(head, body, None, token), kind, run_text))
                                continue
                            parts = (head[:-1], b',"data":{"token":', text, b",", body[_SPLICE:], b"\n")
                            append((seq, b"".join(parts), kind, run_text))
                        else:
                            append((seq, splice(head, body, None, token), kind, run_text))
                        continue
                    line = encoder.assemble(
                        envelope, body, error, token, own_token=kind == "llm_new_token" and token is None
                    )
                    if hook is not None:  # it may change any field: the line alone
                        edited = hook(orjson.loads(line))
                        append(None if edited is None else (seq, encoder.encode(edited)))
                        continue
                    append((seq, line, kind, run_text))
                except Exception as exc:
                    append(self._failed(record, exc))
        if counted:
            parameters.counts.update(counted)
        return out

    def _token_head(self, key: tuple[int, int | None, str | None]) -> bytes:
        """The envelope of the streamed tokens of run ``key[0]`` (parent ``key[1]``, name
        ``key[2]``) after ``seq`` and ``ts``, up to the token's value: what ``many``
        writes for any other event, cut where those fields go (orjson writes a dict's
        members in order, with no spaces)."""
        run_id, parent_run_id, name = key
        redact = self._redactor.text
        head = self.encoder.head(
            {
                "kind": "llm_new_token",
                "experiment": self.experiment,
                "run": self.run,
                "tracker": self.writer,
                "run_id": uuid_text(run_id),
                "parent_run_id": None if parent_run_id is None else uuid_text(parent_run_id),
                "name": name if name is None else redact(name),
                "duration": None,
            }
        )
        heads = self._token_heads
        if len(heads) >= _MAX_TOKEN_HEADS:
            heads.clear()
        heads[key] = out = b"," + head[1:-1] + b',"data":{"token":'
        return out

    def _model_call(self, kind: str, body: bytes) -> bool:
        """Note a model call's hyperparameters from the parts of ``body`` that hold them,
        parsed only the first time they are seen; ``False`` if that cannot be done.

        ``data``'s prompts or messages come last (``_handler``), the body's metadata
        last of all: the text before ``,"messages":[`` plus ``}}`` parses as JSON only
        if that key is a member of ``data`` (else it cut a nested object, and the caller
        parses the whole body), and then it holds every other member; the same for
        ``{"metadata":...}``. The same text means the same parameters: noting them again
        adds nothing.
        """
        cut = body.find(_LAST_OF_DATA[kind])
        tail = body.rfind(_METADATA)
        if cut == -1 or tail < cut:
            return False
        recent = self._recent_calls
        for head, metadata_text in recent:  # compared in place, not hashed (~1 KB)
            if (
                cut == len(head)
                and len(body) - tail == len(metadata_text)
                and body.startswith(head)
                and body.endswith(metadata_text)
            ):
                return True
        key = (body[:cut], body[tail:])
        seen = self._calls_seen
        if key in seen:
            recent.insert(0, key)
            del recent[_RECENT_CALLS:]
            return True
        try:
            data = orjson.loads(key[0] + b"}}")["data"]
            metadata = orjson.loads(b"{" + key[1][1:])["metadata"]
        except Exception:  # orjson's errors, or a cut at another depth
            return False
        if not isinstance(data, dict):
            return False
        self.parameters.model_call(data.get("invocation_params"), metadata)
        if len(seen) >= _MAX_CALLS_SEEN:
            seen.clear()
        seen.add(key)
        recent.insert(0, key)
        del recent[_RECENT_CALLS:]
        return True

    def _usage(self, body: bytes) -> bool:
        """Add an ``llm_end``'s token usage from its ``llm_output`` alone (parsed on its
        own, as ``_model_call`` parses parts); ``False`` if it has none there."""
        start = body.rfind(_LLM_OUTPUT)
        end = body.find(_AFTER_LLM_OUTPUT, start)
        if start == -1 or end == -1:
            return False
        if end - start == _NULL_LLM_OUTPUT and body.endswith(b"null", 0, end):
            return False  # a streamed call's llm_output (its usage is in the generations)
        try:
            output = orjson.loads(b"{" + body[start + 1 : end] + b"}")["llm_output"]
        except Exception:
            return False
        if not isinstance(output, dict) or not isinstance(output.get("token_usage"), dict):
            return False
        self.parameters.usage(output["token_usage"])
        return True

    def redacted_parameters(self) -> RunSummary:
        """The run's parameters and metrics, credential-looking text redacted (worker side).

        As a mapping, the flat parameters (``RunParameters.as_dict``); see ``RunSummary``.
        """
        redact = self._redactor.text
        parameters = self.parameters
        return RunSummary(
            hyperparameters={
                key: redact(value) if isinstance(value, str) else value
                for key, value in parameters.hyperparameters().items()
            },
            metrics=parameters.metrics(),
            flat={
                key: redact(value) if isinstance(value, str) else value
                for key, value in parameters.as_dict().items()
            },
        )

    def _collect(self, kind: str, body: bytes) -> None:
        if kind == "llm_end":
            if self._usage(body):
                return
        elif self._model_call(kind, body):
            return
        try:
            parts = orjson.loads(body)
        except Exception:  # parameters are best effort; the event itself is still written
            return
        data = parts.get("data") if isinstance(parts, dict) else None
        if not isinstance(data, dict):
            return
        params = self.parameters
        if kind != "llm_end":
            call = (data.get("invocation_params"), parts.get("metadata"))
            if call != self._last_call:  # the same model called again adds nothing new
                self._last_call = call
                params.model_call(*call)
            return
        response = data.get("response")
        if not isinstance(response, dict):
            return
        llm_output = response.get("llm_output")
        if isinstance(llm_output, dict) and isinstance(llm_output.get("token_usage"), dict):
            params.usage(llm_output["token_usage"])
            return
        for generations in response.get("generations") or ():
            for generation in generations or ():
                message = generation.get("message") if isinstance(generation, dict) else None
                if isinstance(message, dict):
                    params.usage(message.get("usage_metadata"))
