"""Records -> redacted JSON lines, and the run's parameters: ``EventTranslator`` (worker side).

Everything here runs on the worker side, so it may keep state without locks: the
names and start times of open runs (for ``name`` and ``duration`` on end events),
the tail of each run's token stream, and the run's parameters. The record's shape
is in ``_schema``.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Sequence
from typing import Any, Final

import orjson

from .._config import TrackerConfig
from .._errors import error_fields
from .._redact import StreamRedactor
from .._sinks._base import RunSummary
from ._encode import SPLICE as _SPLICE
from ._encode import Encoder
from ._parameters import RunParameters
from ._schema import BODY, ENDS, EXTRA, KIND, PARENT_RUN_ID, RUN_ID, STARTS, id_value, uuid_text
from ._stream import ARGS, BLOCK_TOKEN, TOOL_CALL_CHUNKS, mask_token, stream_blocks, stream_tool_args

__all__ = ["EventTranslator"]

_MAX_OPEN_RUNS: Final = 100_000
_KIND: Final = operator.itemgetter(KIND)
_BODY: Final = operator.itemgetter(BODY)
_PARAMETER_KINDS: Final = frozenset({"llm_start", "chat_model_start", "llm_end"})

#: The last member of ``data`` in a model start's body, and where the body's metadata starts.
_LAST_OF_DATA: Final = {"chat_model_start": b',"messages":[', "llm_start": b',"prompts":['}
_METADATA: Final = b',"metadata":'
_LLM_OUTPUT: Final = b',"llm_output":'
_AFTER_LLM_OUTPUT: Final = b',"run":'  # LLMResult's member after llm_output
_MAX_CALLS_SEEN: Final = 1024  # distinct model-call parameter texts remembered
_MAX_TOKEN_HEADS: Final = 4096  # streaming runs whose envelope is remembered (then it starts over)


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
        self._clean_tokens: dict[int, tuple[Sequence[Any], bytes, bool]] = {}
        self._last_call: tuple[Any, Any] | None = None
        self._calls_seen: set[tuple[bytes, bytes]] = set()
        self._hook = config.redact
        # Parameter keys judged as the lines' keys are (KeyRule: normalized words), and
        # a key holding a credential's format is left out with its value.
        rule = self._redactor.key_rule if config.redact_keys else None
        text = self._redactor.text
        self.parameters = RunParameters(lambda key: (rule is not None and rule(key)) or text(key) != key)
        self._open: dict[Any, tuple[str | None, float]] = {}
        #: The envelope of a run's streamed tokens after ``seq`` and ``ts`` (the same for
        #: every token of the run), by (run id, parent run id, name): see ``many``.
        self._token_heads: dict[tuple[int, int | None, str | None], bytes] = {}

    @property
    def placeholders(self) -> int:
        """Events written with a placeholder for a value that could not be captured."""
        return self.encoder.placeholders

    def prepare(self, records: Sequence[Sequence[Any]], /) -> None:  # noqa: PLR0915 - one frame a chunk
        """Pre-check the bodies of a chunk of records at once (see ``Redactor.prepare``)."""
        kinds = set(map(_KIND, records))
        if "llm_new_token" not in kinds:
            bodies = list(map(_BODY, records))
            if all(map(bytes.__instancecheck__, bodies)):
                leads = None
                if not kinds.isdisjoint(_LAST_OF_DATA):
                    # A model start's description, before its prompts or messages, is the
                    # same at every call of the model (see Redactor.prepare).
                    leads = [
                        b.find(_LAST_OF_DATA[k]) if k in _LAST_OF_DATA else None
                        for k, b in zip(map(_KIND, records), bodies, strict=True)
                    ]
                self.encoder.prepare(bodies, leads)
                self._clean_tokens = {}
                return
        bodies = []
        # What each body shares with others (Redactor.prepare): a token's JSON text, the
        # length of a model start's description.
        shared: list[bytes | int | None] = []
        streams: dict[Any, list[str]] = {}
        tokens: list[tuple[Any, Sequence[Any], bytes | None]] = []
        blocks = set()
        dumps = orjson.dumps
        add_body = bodies.append
        add_shared = shared.append
        add_token = tokens.append
        UUID = uuid.UUID  # a local: no global and attribute look-up per token
        last_run: Any = None
        run_tokens: list[str] | None = None  # the tokens of last_run (they come in a row)
        for record in records:
            kind, body, extra = record[KIND], record[BODY], record[EXTRA]
            text: bytes | int | None = None
            if kind == "llm_new_token":
                run = record[RUN_ID]
                if type(run) is UUID:
                    run = run.int
                if type(extra) is not str:
                    blocks.add(run)
                    continue  # not the bodies holding content-block tokens (their "token" key is ours)
                if run_tokens is None or run != last_run:
                    run_tokens = streams.get(run)
                    if run_tokens is None:
                        run_tokens = streams[run] = []
                    last_run = run
                run_tokens.append(extra)
                token: bytes | None = None
                try:  # not contextlib.suppress, which runs Python frames per token
                    token = dumps(extra)
                except orjson.JSONEncodeError:  # a lone surrogate: none
                    pass
                add_token((run, record, token))
                text = token
            elif kind in _LAST_OF_DATA and type(body) is bytes:
                text = body.find(_LAST_OF_DATA[kind])
            if type(body) is bytes:
                add_body(body)
                add_shared(text)
        joined = self.encoder.prepare(bodies, shared)
        for run in blocks:  # content blocks join the run's stream in order, in many()
            streams.pop(run, None)
        # A clean run's tail moves past its tokens now; many() writes them as they are.
        clean = self._streams.clean(streams, self._redactor.may_match) if streams else set()
        # By identity (the records stay alive while the engine holds the chunk), with
        # the token's JSON text and whether many() writes it from its run's envelope: its
        # body written as it is (plain, data not empty, no tool call streamed: one search
        # of the chunk for all), its ids ints (as the worker process receives them).
        plain = self.encoder.plain
        every = len(plain) == len(bodies)  # every body of the chunk is plain (bodies are distinct)
        tool_calls = joined.find(TOOL_CALL_CHUNKS) != -1
        fast = self._hook is None
        clean_tokens = self._clean_tokens = {}
        for run, record, text in tokens:
            if run in clean:
                body = record[BODY]
                clean_tokens[id(record)] = (
                    record,
                    text or b"",
                    fast
                    and text is not None
                    and type(body) is bytes
                    and (every or plain.get(id(body)) is body)
                    and body[_SPLICE] != 0x7D
                    and not (tool_calls and body.find(TOOL_CALL_CHUNKS) != -1)
                    and type(record[RUN_ID]) is int
                    and (record[PARENT_RUN_ID] is None or type(record[PARENT_RUN_ID]) is int),
                )

    def __call__(self, record: Sequence[Any], /) -> tuple[int, bytes] | None:
        """One record as ``(seq, line)``, or ``None`` if the ``redact`` hook dropped it."""
        out = self.many((record,))[0]
        if isinstance(out, Exception):
            raise out
        return out

    def many(  # noqa: C901, PLR0915 - the worker's hot loop: one frame per chunk, on purpose
        self, records: Sequence[Sequence[Any]]
    ) -> list[tuple[int, bytes] | Exception | None]:
        """Each record as ``(seq, line)``, ``None`` (dropped by the ``redact`` hook) or the
        exception that stopped it (the caller counts it and writes a placeholder).

        The worker's hot loop: one Python frame per chunk, not four per record. A body
        that ``prepare()`` found plain (nothing to redact, no placeholder) is spliced
        behind its envelope as it is; any other goes through ``Encoder.assemble``.
        """
        out: list[tuple[int, bytes] | Exception | None] = []
        append = out.append
        encoder = self.encoder
        splice = encoder.splice
        plain = encoder.plain
        streams = self._streams
        clean_tokens = self._clean_tokens
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
        last: tuple[Any, Any, Any, bytes] | None = None  # the token before: its ids, name, envelope
        for record in records:
            try:
                kind, seq, ts, run_id, parent_run_id, name, body, extra = record
                clean = clean_tokens.get(id(record))
                if clean is not None and clean[2] and clean[0] is record:
                    # A streamed token written as it is (most events of a streamed call):
                    # its envelope is its run's but for seq and ts, which come first,
                    # written once per run (see prepare()); the same as the token's
                    # before it when it was one of the same run (nothing in between
                    # opened or ended a run).
                    if (
                        last is not None
                        and run_id == last[0]
                        and parent_run_id == last[1]
                        and name == last[2]
                    ):
                        head = last[3]
                    else:
                        given = name
                        if name is None:
                            opened = open_runs.get(run_id)
                            if opened is not None:
                                name = opened[0]
                        if name is not None and type(name) is not str:
                            head = None
                        else:
                            key = (run_id, parent_run_id, name)
                            head = token_heads.get(key)
                            if head is None:
                                head = self._token_head(key)
                            last = (run_id, parent_run_id, given, head)
                    if head is not None:
                        count(kind)
                        fields = (
                            b'{"seq":',
                            dumps(seq),
                            b',"ts":',
                            dumps(ts),
                            head,
                            clean[1],
                            b",",
                            body[_SPLICE:],
                            b"\n",
                        )
                        append((seq, b"".join(fields)))
                        continue
                last = None  # this record may open or end a run
                # UUID.__hash__ is Python code; its int hashes in C.
                run = run_id.int if type(run_id) is uuid.UUID else run_id
                token = None
                error = None
                if kind == "llm_new_token":
                    if type(extra) is str:  # the streamed text, redacted joined to the run's stream
                        if clean is not None and clean[0] is record:
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
                if kind in _PARAMETER_KINDS:
                    self._collect(kind, body)
                envelope = {
                    "seq": seq,
                    "ts": ts,
                    "kind": kind,
                    "experiment": experiment,
                    "run": run_name,
                    "tracker": writer,
                    "run_id": uuid_text(run_id) if type(run_id) is int else id_value(run_id),
                    "parent_run_id": (
                        uuid_text(parent_run_id) if type(parent_run_id) is int else id_value(parent_run_id)
                    ),
                    "name": (names.get(name) or redact_name(name)) if type(name) is str else name,
                    "duration": duration,
                }
                if error is None and hook is None and type(body) is bytes and plain.get(id(body)) is body:
                    try:
                        head = dumps(envelope)
                    except orjson.JSONEncodeError:  # a lone surrogate in a name
                        head = encoder.head(envelope)
                    # encoder.splice(head, body[, token]), inlined: the common cases.
                    if token is None:
                        append((seq, b"".join((head[:-1], b",", body[1:], b"\n"))))
                    elif body[_SPLICE] != 0x7D and type(token) is str:  # data is not empty
                        try:
                            text = dumps(token)
                        except orjson.JSONEncodeError:  # a lone surrogate
                            append((seq, splice(head, body, None, token)))
                            continue
                        parts = (head[:-1], b',"data":{"token":', text, b",", body[_SPLICE:], b"\n")
                        append((seq, b"".join(parts)))
                    else:
                        append((seq, splice(head, body, None, token)))
                    continue
                line = encoder.assemble(
                    envelope, body, error, token, own_token=kind == "llm_new_token" and token is None
                )
                if hook is not None:
                    edited = hook(orjson.loads(line))
                    if edited is None:
                        append(None)
                        continue
                    line = encoder.encode(edited)
                append((seq, line))
            except Exception as exc:
                append(exc)
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
        key = (body[:cut], body[tail:])
        seen = self._calls_seen
        if key in seen:
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
        return True

    def _usage(self, body: bytes) -> bool:
        """Add an ``llm_end``'s token usage from its ``llm_output`` alone (parsed on its
        own, as ``_model_call`` parses parts); ``False`` if it has none there."""
        start = body.rfind(_LLM_OUTPUT)
        end = body.find(_AFTER_LLM_OUTPUT, start)
        if start == -1 or end == -1:
            return False
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
