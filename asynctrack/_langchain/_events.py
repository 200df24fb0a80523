"""Worker side of the LangChain adapter: records → JSON lines, and run parameters.

A record is the tuple the handler appended on the caller's thread:

    (kind, seq, ts, run_id, parent_run_id, name, body, extra)

where ``body`` is ``{"data": {...}, "tags": ..., "metadata": ...}`` captured as
JSON bytes (or a ``Captured`` copy), and ``extra`` the exception of an error
event (formatted here, off the hot path) or the text of a streamed token (spliced
into ``data`` here). Everything here runs on the worker
thread, so it may keep state without locks: the names and start times of open
runs (for ``name`` and ``duration`` on end events) and the run's parameters.
"""

from __future__ import annotations

import collections
import math
import random
import re
import traceback
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .._config import TrackerConfig
from .._encode import Encoder
from .._sinks._base import ParameterValue, RunSummary
from ._capture import Captured

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
_TOKEN_METRICS: Final = {"prompt": "tokens_in", "completion": "tokens_out", "total": "tokens_total"}
_HYPER_KEYS_FROM_METADATA: Final = {
    "ls_model_name": "model_name",
    "ls_temperature": "temperature",
    "ls_max_tokens": "max_tokens",
    "ls_provider": "provider",
    "ls_model_type": "model_type",
}


def _error_fields(error: Any) -> dict[str, Any]:
    if not isinstance(error, BaseException):
        return {"type": type(error).__name__, "message": str(error), "traceback": None}
    try:
        tb = "".join(traceback.format_exception(error))
    except Exception:  # a broken __str__ in a chained exception
        tb = None
    cls = type(error)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(error)
    except Exception:
        message = "<str() failed>"
    return {"type": name, "message": message, "traceback": tb}


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
        if self._secret is not None and self._secret.search(key.lower().replace("-", "_")):
            return
        if key.startswith("_"):
            key = "llm" + key  # _type -> llm_type
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
    """Turns handler records into JSON lines; one per tracker, worker thread only."""

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
        self._hook = config.redact
        self.parameters = RunParameters(re.compile(config.redact_keys) if config.redact_keys else None)
        self._open: dict[Any, tuple[str | None, float]] = {}
        self._prepared = 0

    def prepare(self, records: list[tuple[Any, ...]]) -> None:
        """Pre-check a chunk of records at once (see ``Encoder.prepare``)."""
        bodies = [r[6] for r in records if type(r[6]) is bytes]
        # Streamed tokens travel beside their bodies; their text is checked too.
        bodies.extend(r[7].encode("utf-8", "replace") for r in records if type(r[7]) is str)
        self.encoder.prepare(bodies)
        self._prepared = len(records)

    def __call__(self, record: tuple[Any, ...]) -> tuple[int, bytes] | None:
        # The chunk pre-check covers exactly the records prepare() saw; any other
        # record gets the per-body checks.
        if self._prepared:
            self._prepared -= 1
        else:
            self.encoder.reset_chunk()
        kind, seq, ts, run_id, parent_run_id, name, body, extra = record
        own = None
        error = None
        if kind == "llm_new_token":
            own = ("token", extra)  # the streamed text: kept out of the captured body
        elif extra is not None:
            error = _error_fields(extra)
        duration = None
        if kind in _STARTS:
            if len(self._open) >= _MAX_OPEN_RUNS:  # runs that never end: forget the oldest
                self._open.pop(next(iter(self._open)))
            self._open[run_id] = (name, ts)
        elif kind in _ENDS:
            opened = self._open.pop(run_id, None)
            if opened is not None:
                name = name or opened[0]
                duration = ts - opened[1]
                self.parameters.ended(kind, duration)
        elif name is None:
            opened = self._open.get(run_id)
            if opened is not None:
                name = opened[0]
        self.parameters.counts[kind] += 1
        if kind in _PARAMETER_KINDS:
            self._collect(kind, body)
        envelope = {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "experiment": self.experiment,
            "run": self.run,
            "tracker": self.writer,
            "run_id": run_id,
            "parent_run_id": parent_run_id,
            "name": name,
            "duration": duration,
        }
        line = self.encoder.assemble(envelope, body, error, own)
        if self._hook is not None:
            edited = self._hook(orjson.loads(line))
            if edited is None:
                return None
            line = self.encoder.encode(edited)
        return seq, line

    def redacted_parameters(self) -> RunSummary:
        """The run's parameters and metrics, credential-looking text redacted (worker thread).

        As a mapping, the flat parameters (``RunParameters.as_dict``); see ``RunSummary``.
        """
        redact = self.encoder.redact_text
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

    def _parts(self, body: bytes | Captured) -> dict[str, Any]:
        parts = orjson.loads(body) if type(body) is bytes else self.encoder.jsonable(body.value)  # type: ignore[union-attr]
        return parts if isinstance(parts, dict) else {}

    def _collect(self, kind: str, body: bytes | Captured) -> None:
        try:
            parts = self._parts(body)
        except Exception:  # parameters are best effort; the event itself is still written
            return
        data = parts.get("data")
        if not isinstance(data, dict):
            return
        params = self.parameters
        if kind != "llm_end":
            params.model_call(data.get("invocation_params"), parts.get("metadata"))
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
