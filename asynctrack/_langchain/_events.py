"""Worker side of the LangChain adapter: records → JSON lines, and run parameters.

A record is the tuple the handler appended on the caller's thread:

    (kind, seq, ts, run_id, parent_run_id, name, body, extra)

where ``body`` is always ``bytes``: the JSON of ``{"data": {...}, "tags": ...,
"metadata": ...}``, captured on the caller's thread; ``extra`` the exception of an
error event (formatted here, off the hot path) or the ``str`` of a streamed token
(redacted joined to its run's stream and spliced into ``data`` here), else
``None``; ``name`` a ``str`` or ``None``. Everything here runs on the worker side,
so it may keep state without locks: the names and start times of open runs (for
``name`` and ``duration`` on end events), the tail of each run's token stream,
and the run's parameters.
"""

from __future__ import annotations

import collections
import math
import operator
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from .._capture import valid_text
from .._config import TrackerConfig
from .._encode import SPLICE as _SPLICE
from .._encode import Encoder
from .._errors import error_fields
from .._redact import StreamRedactor
from .._sinks._base import ParameterValue, RunSummary

__all__ = ["EVENT_KINDS", "EventTranslator", "RunParameters"]

#: Every event kind, with the fields the handler puts in ``data`` (besides the
#: callback's other keyword arguments).
EVENT_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "chain_start": ("serialized", "inputs"),
    "chain_end": ("outputs",),
    "chain_error": ("error",),
    "llm_start": ("serialized", "prompts", "invocation_params"),
    "chat_model_start": ("serialized", "messages", "invocation_params"),
    "llm_new_token": ("token", "chunk"),
    "llm_end": ("response",),
    "llm_error": ("error",),
    "tool_start": ("serialized", "input_str", "inputs"),
    "tool_end": ("output",),
    "tool_error": ("error",),
    "agent_action": ("action",),
    "agent_finish": ("finish",),
    "retriever_start": ("serialized", "query"),
    "retriever_end": ("documents",),
    "retriever_error": ("error",),
    "text": ("text",),
    "retry": ("attempt_number", "idle_for", "seconds_since_start", "next_sleep", "exception"),
    "custom_event": ("name", "data"),
    "stream_event": ("event",),
}

_STARTS: Final = frozenset(k for k in EVENT_KINDS if k.endswith("_start"))
_ENDS: Final = frozenset(k for k in EVENT_KINDS if k.endswith(("_end", "_error")))
_MAX_OPEN_RUNS: Final = 100_000
_KIND: Final = operator.itemgetter(0)  # a record's kind
_BODY: Final = operator.itemgetter(6)  # a record's captured body
_PARAMETER_KINDS: Final = frozenset({"llm_start", "chat_model_start", "llm_end"})
#: The latency group of each end event (a chat model ends with ``llm_end`` too).
_LATENCY_GROUP: Final = {
    kind: kind.rsplit("_", 1)[0]
    for kind in _ENDS
    if kind.startswith(("chain_", "llm_", "tool_", "retriever_"))
}
#: Durations kept per group for the percentiles; past it, a uniform sample of
#: every duration seen (reservoir sampling), so memory stays bounded on long runs
#: and a flush sorts at most this many floats (about 1 ms).
_LATENCY_SAMPLE: Final = 4096
_MAX_NAMES: Final = 10_000  # parameter keys judged and remembered (they can be data)
_TOKEN_METRICS: Final = {"prompt": "tokens_in", "completion": "tokens_out", "total": "tokens_total"}
_HYPER_KEYS_FROM_METADATA: Final = {
    "ls_model_name": "model_name",
    "ls_temperature": "temperature",
    "ls_max_tokens": "max_tokens",
    "ls_provider": "provider",
    "ls_model_type": "model_type",
}


_TOKEN_FIELDS: Final = (b'"text":', b'"content":')


def _mask_token(body: bytes, raw: str, redacted: str) -> bytes:
    """``body`` with each ``text`` or ``content`` string equal to ``raw`` (a streamed
    token) replaced by ``redacted`` (what the stream made of it)."""
    try:
        old = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # a lone surrogate: the capture wrote U+FFFD
        old = orjson.dumps(valid_text(raw))
    new = orjson.dumps(valid_text(redacted))
    for field in _TOKEN_FIELDS:
        body = body.replace(field + old, field + new)
    return body


#: The last member of ``data`` in a model start's body, and where the body's metadata starts.
_LAST_OF_DATA: Final = {"chat_model_start": b',"messages":[', "llm_start": b',"prompts":['}
_METADATA: Final = b',"metadata":'
_LLM_OUTPUT: Final = b',"llm_output":'
_AFTER_LLM_OUTPUT: Final = b',"run":'  # LLMResult's member after llm_output
_MAX_CALLS_SEEN: Final = 1024  # distinct model-call parameter texts remembered


#: A token of content blocks (a list: Anthropic's models, OpenAI's Responses API),
#: captured first in the body (``_handler``).
_BLOCK_TOKEN: Final = b'{"data":{"token":['
#: The streamed text of a content block: its text, or a tool call's partial arguments.
_BLOCK_TEXT: Final = ("text", "partial_json")


def _stream_fields(
    streams: StreamRedactor, stream: Any, items: Any, fields: tuple[str, ...]
) -> dict[str, str]:
    """Each non-empty string ``fields`` of the dicts in ``items`` (a list), in order,
    redacted joined to ``stream`` (``StreamRedactor.token``) and set in place; returns
    what changed, original -> redacted."""
    changed: dict[str, str] = {}
    for item in items if type(items) is list else ():
        for field in fields if type(item) is dict else ():
            text = item.get(field)
            if type(text) is str and text:
                redacted = streams.token(stream, text)
                if redacted != text:
                    changed[text] = item[field] = redacted
    return changed


def _replace_fields(changed: dict[str, str], items: Any, fields: tuple[str, ...]) -> None:
    """Each ``fields`` string of the dicts in ``items`` that ``changed`` has, replaced."""
    for item in items if type(items) is list else ():
        for field in fields if type(item) is dict else ():
            if item.get(field) in changed:
                item[field] = changed[item[field]]


def _rewritten(parts: Any, body: bytes) -> bytes:
    try:
        return orjson.dumps(parts)
    except orjson.JSONEncodeError:  # never seen: what orjson read, it writes
        return body


def _stream_blocks(streams: StreamRedactor, run: Any, body: bytes) -> bytes:
    """``body`` of a content-block token with each block's streamed text redacted joined
    to the run's stream, as a ``str`` token is (``StreamRedactor``): a secret split
    across chunks must not be written in fragments. The chunk's message repeats the
    blocks: they are redacted alike. Returns ``body`` itself when nothing changed."""
    try:
        parts = orjson.loads(body)
        data = parts["data"]
        blocks = data["token"]
    except Exception:  # not JSON (a placeholder): the body's own scan applies
        return body
    changed = _stream_fields(streams, run, blocks, _BLOCK_TEXT)
    if not changed:
        return body
    chunk = data.get("chunk")
    message = chunk.get("message") if type(chunk) is dict else None
    for holder, key in ((message, "content"), (chunk, "text")):
        value = holder.get(key) if type(holder) is dict else None
        if type(value) is str:
            for old, new in changed.items():
                value = value.replace(old, new)
            holder[key] = value  # type: ignore[index]
        else:
            _replace_fields(changed, value, _BLOCK_TEXT)
    return _rewritten(parts, body)


#: A chunk streaming a tool call (OpenAI's models: its arguments in pieces, the token
#: empty), and the stream its arguments are joined in (per run, beside the text's).
_TOOL_CALL_CHUNKS: Final = b'"tool_call_chunks":[{'
_ARGS: Final = "tool_call_args"
_ARGS_FIELD: Final = ("args",)


def _stream_tool_args(streams: StreamRedactor, run: Any, body: bytes) -> bytes:
    """``body`` with the pieces of tool-call arguments in its message's
    ``tool_call_chunks`` redacted joined to the run's stream of arguments (as a token
    is joined to its run's text), and the same pieces in ``invalid_tool_calls``."""
    try:
        parts = orjson.loads(body)
        message = parts["data"]["chunk"]["message"]
        chunks = message["tool_call_chunks"]
    except Exception:  # not the shape LangChain writes: the body's own scan applies
        return body
    changed = _stream_fields(streams, (run, _ARGS), chunks, _ARGS_FIELD)
    if not changed:
        return body
    _replace_fields(changed, message.get("invalid_tool_calls"), _ARGS_FIELD)
    return _rewritten(parts, body)


class _Latency:
    """The durations of one group: how many, the longest, and a sample for percentiles."""

    __slots__ = ("count", "max", "sample")

    def __init__(self) -> None:
        self.count = 0
        self.max = 0.0
        self.sample: list[float] = []


class RunParameters:
    """What a run's parameters are made of: hyperparameters seen, counts, tokens.

    Hyperparameters are the scalar ``invocation_params`` of every model call
    (``model_name``, ``temperature``, ``max_tokens``, ...) and the ``ls_*``
    metadata LangChain adds. A key seen with several values is written as their
    sorted, comma-separated list. Keys matching the tracker's credential pattern
    are never collected.
    """

    def __init__(self, secret_keys: re.Pattern[str] | None) -> None:
        self._secret = secret_keys
        self.counts: collections.Counter[str] = collections.Counter()
        self.hyper: dict[str, dict[ParameterValue, None]] = {}
        self.tokens: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, _Latency] = {}
        self._random = random.Random(0).random  # a fixed seed: the same run, the same sample
        self._names: dict[str, str | None] = {}  # parameter key -> its name, None if secret

    def ended(self, kind: str, duration: float) -> None:
        """Note the duration of a chain, LLM, tool or retriever run (end or error)."""
        group = _LATENCY_GROUP.get(kind)
        if group is None:
            return
        latency = self.latency.get(group)
        if latency is None:
            latency = self.latency[group] = _Latency()
        latency.count += 1
        if duration > latency.max:  # noqa: PLR1730 - a comparison, not a max() call, per end event
            latency.max = duration
        sample = latency.sample
        if len(sample) < _LATENCY_SAMPLE:
            sample.append(duration)
        else:  # reservoir sampling: each duration seen stays with probability size/count
            slot = int(self._random() * latency.count)
            if slot < _LATENCY_SAMPLE:
                sample[slot] = duration

    def model_call(self, invocation_params: Any, metadata: Any) -> None:
        """Note the hyperparameters of one LLM or chat-model call."""
        if isinstance(invocation_params, Mapping):
            for key, value in invocation_params.items():
                self._hyper(str(key), value)
        if isinstance(metadata, Mapping):
            for key, name in _HYPER_KEYS_FROM_METADATA.items():
                if key in metadata and name not in self.hyper:
                    self._hyper(name, metadata[key])

    def _hyper(self, key: str, value: Any) -> None:
        if key in self._names:
            name = self._names[key]
        else:  # first seen: judged once (a model is called with the same keys)
            if self._secret is not None and self._secret.search(key.lower().replace("-", "_")):
                name = None
            else:
                name = "llm" + key if key.startswith("_") else key  # _type -> llm_type
            if len(self._names) < _MAX_NAMES:
                self._names[key] = name
        if name is None:
            return
        key = name
        if isinstance(value, bool):
            value = str(value).lower()
        elif not isinstance(value, str | int | float) or value is None:
            return
        if isinstance(value, str) and len(value) > 256:
            return
        self.hyper.setdefault(key, {})[value] = None

    def usage(self, usage: Any) -> None:
        """Add a call's token usage (OpenAI ``token_usage`` or LangChain ``usage_metadata``)."""
        if not isinstance(usage, Mapping):
            return
        for ours, theirs in (
            ("prompt", ("prompt_tokens", "input_tokens")),
            ("completion", ("completion_tokens", "output_tokens")),
            ("total", ("total_tokens",)),
        ):
            for key in theirs:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.tokens[ours] += value
                    break

    def hyperparameters(self) -> dict[str, ParameterValue]:
        """The hyperparameters seen: a value, or the sorted, comma-separated values."""
        out: dict[str, ParameterValue] = {}
        for key, values in sorted(self.hyper.items()):
            distinct = list(values)
            out[key] = distinct[0] if len(distinct) == 1 else ", ".join(sorted(map(str, distinct)))
        return out

    def as_dict(self) -> dict[str, ParameterValue]:
        """The parameters, flat: hyperparameters, ``events_<kind>``, ``tokens_<kind>``."""
        out = self.hyperparameters()
        out["events_total"] = sum(self.counts.values())
        for kind, count in sorted(self.counts.items()):
            out[f"events_{kind}"] = count
        for kind, count in sorted(self.tokens.items()):
            out[f"tokens_{kind}"] = count
        return out

    def metrics(self) -> dict[str, float]:
        """Counts, tokens and latency (seconds) as metrics, for sinks that keep them apart.

        ``events_total``, ``events_<kind>``, ``llm_calls`` (LLM and chat-model
        starts), ``errors`` (every ``*_error`` event), ``tokens_in``,
        ``tokens_out``, ``tokens_total``, and ``latency_<group>_p50``, ``_p95``
        and ``_max`` for the groups ``chain``, ``llm``, ``tool`` and ``retriever``
        (nearest-rank percentiles of a uniform sample of at most 4096 durations).
        """
        counts = self.counts
        out: dict[str, float] = {"events_total": float(sum(counts.values()))}
        for kind, count in sorted(counts.items()):
            out[f"events_{kind}"] = float(count)
        out["llm_calls"] = float(counts["llm_start"] + counts["chat_model_start"])
        out["errors"] = float(sum(n for kind, n in counts.items() if kind.endswith("_error")))
        for ours, name in _TOKEN_METRICS.items():
            if ours in self.tokens:
                out[name] = float(self.tokens[ours])
        for group, latency in sorted(self.latency.items()):
            ordered = sorted(latency.sample)
            for label, fraction in (("p50", 0.50), ("p95", 0.95)):
                out[f"latency_{group}_{label}"] = ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]
            out[f"latency_{group}_max"] = latency.max
        return out


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
        self._clean_tokens: dict[int, Sequence[Any]] = {}
        self._last_call: tuple[Any, Any] | None = None
        self._calls_seen: set[tuple[bytes, bytes]] = set()
        self._hook = config.redact
        self.parameters = RunParameters(re.compile(config.redact_keys) if config.redact_keys else None)
        self._open: dict[Any, tuple[str | None, float]] = {}

    @property
    def placeholders(self) -> int:
        """Events written with a placeholder for a value that could not be captured."""
        return self.encoder.placeholders

    def prepare(self, records: Sequence[Sequence[Any]]) -> None:
        """Pre-check the bodies of a chunk of records at once (see ``Redactor.prepare``)."""
        if "llm_new_token" not in set(map(_KIND, records)):
            bodies = list(map(_BODY, records))
            if all(map(bytes.__instancecheck__, bodies)):
                self.encoder.prepare(bodies)
                self._clean_tokens = {}
                return
        # Not the bodies holding content-block tokens (their "token" key is ours).
        self.encoder.prepare(
            [r[6] for r in records if type(r[6]) is bytes and (r[0] != "llm_new_token" or type(r[7]) is str)]
        )
        streams: dict[Any, list[str]] = {}
        tokens = []
        blocks = set()
        for record in records:
            if record[0] == "llm_new_token":
                run = record[3].int if type(record[3]) is uuid.UUID else record[3]
                if type(record[7]) is str:
                    streams.setdefault(run, []).append(record[7])
                    tokens.append((run, record))
                else:
                    blocks.add(run)
        for run in blocks:  # content blocks join the run's stream in order, in many()
            streams.pop(run, None)
        # A clean run's tail moves past its tokens now; many() writes them as they are.
        clean = self._streams.clean(streams, self._redactor.may_match) if streams else set()
        # By identity (the records stay alive while the engine holds the chunk).
        self._clean_tokens = {id(r): r for run, r in tokens if run in clean}

    def __call__(self, record: tuple[Any, ...]) -> tuple[int, bytes] | None:
        """One record as ``(seq, line)``, or ``None`` if the ``redact`` hook dropped it."""
        out = self.many((record,))[0]
        if isinstance(out, Exception):
            raise out
        return out

    def many(  # noqa: PLR0915 - the worker's hot loop: one frame per chunk, on purpose
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
        counts = parameters.counts
        redact_name = self._redactor.text
        names = self._redactor.texts  # its cache: a name seen before costs no call
        hook = self._hook
        dumps = orjson.dumps
        experiment, run_name, writer = self.experiment, self.run, self.writer
        for record in records:
            try:
                kind, seq, ts, run_id, parent_run_id, name, body, extra = record
                # UUID.__hash__ is Python code; its int hashes in C.
                run = run_id.int if type(run_id) is uuid.UUID else run_id
                token = None
                error = None
                if kind == "llm_new_token":
                    if type(extra) is str:  # the streamed text, redacted joined to the run's stream
                        if clean_tokens.get(id(record)) is record:
                            token = extra  # its run's tail moved past it in prepare()
                        else:
                            token = streams.token(run, extra)
                            if token != extra and type(body) is bytes:
                                # The chunk repeats the token (its text, its message's
                                # content): the redacted token there too, else the
                                # fragments of a secret split across tokens are written.
                                body = _mask_token(body, extra, token)
                        if type(body) is bytes and _TOOL_CALL_CHUNKS in body:
                            body = _stream_tool_args(streams, run, body)
                    elif type(body) is bytes and body.startswith(_BLOCK_TOKEN):
                        body = _stream_blocks(streams, run, body)  # content blocks: joined too
                elif type(extra) is dict and extra.pop("$error", False):
                    error = extra  # formatted where the exception lived (the worker process's client)
                elif extra is not None:
                    error = error_fields(extra)
                duration = None
                if kind in _STARTS:
                    if len(open_runs) >= _MAX_OPEN_RUNS:  # runs that never end: forget the oldest
                        open_runs.pop(next(iter(open_runs)))
                    open_runs[run] = (name, ts)
                elif kind in _ENDS:
                    streams.end(run)
                    streams.end((run, _ARGS))
                    opened = open_runs.pop(run, None)
                    if opened is not None:
                        name = name or opened[0]
                        duration = ts - opened[1]
                        parameters.ended(kind, duration)
                elif name is None:
                    opened = open_runs.get(run)
                    if opened is not None:
                        name = opened[0]
                counts[kind] += 1
                if kind in _PARAMETER_KINDS:
                    self._collect(kind, body)
                envelope = {
                    "seq": seq,
                    "ts": ts,
                    "kind": kind,
                    "experiment": experiment,
                    "run": run_name,
                    "tracker": writer,
                    "run_id": run_id,
                    "parent_run_id": parent_run_id,
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
