"""Worker side of the LangChain adapter: records → event dicts, and run parameters.

A record is the tuple the handler appended on the caller's thread:

    (kind, seq, ts, run_id, parent_run_id, tags, metadata, a, b, kwargs)

where ``a`` and ``b`` are the callback's positional arguments (already
snapshotted) and ``kwargs`` its other keyword arguments. Everything here runs on
the worker thread, so it may keep state without locks: the names and start times
of open runs (for ``name`` and ``duration`` on end events) and the run's
parameters.
"""

from __future__ import annotations

import collections
import re
import traceback
from collections.abc import Mapping
from typing import Any, Final

from ._sink import ParameterValue
from ._snapshot import FieldsSnapshot

__all__ = ["EVENT_KINDS", "EventTranslator", "RunParameters"]

#: Every event kind, with the names of its ``data`` fields for ``a`` and ``b``.
EVENT_KINDS: Final[dict[str, tuple[str | None, str | None]]] = {
    "chain_start": ("serialized", "inputs"),
    "chain_end": ("outputs", None),
    "chain_error": ("error", None),
    "llm_start": ("serialized", "prompts"),
    "chat_model_start": ("serialized", "messages"),
    "llm_new_token": ("token", "chunk"),
    "llm_end": ("response", None),
    "llm_error": ("error", None),
    "tool_start": ("serialized", "input_str"),
    "tool_end": ("output", None),
    "tool_error": ("error", None),
    "agent_action": ("action", None),
    "agent_finish": ("finish", None),
    "retriever_start": ("serialized", "query"),
    "retriever_end": ("documents", None),
    "retriever_error": ("error", None),
    "text": ("text", None),
    "retry": ("retry_state", None),
    "custom_event": ("event_name", "payload"),
    "stream_event": ("event", None),
}

_STARTS: Final = frozenset(k for k in EVENT_KINDS if k.endswith("_start"))
_ENDS: Final = frozenset(k for k in EVENT_KINDS if k.endswith(("_end", "_error")))
_MAX_OPEN_RUNS: Final = 100_000
_HYPER_KEYS_FROM_METADATA: Final = {
    "ls_model_name": "model_name",
    "ls_temperature": "temperature",
    "ls_max_tokens": "max_tokens",
    "ls_provider": "provider",
    "ls_model_type": "model_type",
}


def _serialized_name(serialized: Any) -> str | None:
    if isinstance(serialized, Mapping):
        name = serialized.get("name")
        if isinstance(name, str):
            return name
        ids = serialized.get("id")
        if isinstance(ids, list) and ids and isinstance(ids[-1], str):
            return ids[-1]
    return None


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

    def as_dict(self) -> dict[str, ParameterValue]:
        """The parameters, flat: hyperparameters, ``events_<kind>``, ``tokens_<kind>``."""
        out: dict[str, ParameterValue] = {}
        for key, values in sorted(self.hyper.items()):
            distinct = list(values)
            out[key] = distinct[0] if len(distinct) == 1 else ", ".join(sorted(map(str, distinct)))
        out["events_total"] = sum(self.counts.values())
        for kind, count in sorted(self.counts.items()):
            out[f"events_{kind}"] = count
        for kind, count in sorted(self.tokens.items()):
            out[f"tokens_{kind}"] = count
        return out


class EventTranslator:
    """Turns handler records into event dicts; one per tracker, worker thread only."""

    def __init__(self, *, experiment: str, run: str, writer: str, secret_keys: str | None) -> None:
        self.experiment = experiment
        self.run = run
        self.writer = writer
        self.parameters = RunParameters(re.compile(secret_keys) if secret_keys else None)
        self._open: dict[Any, tuple[str | None, float]] = {}

    def __call__(self, record: tuple[Any, ...]) -> dict[str, Any]:
        kind, seq, ts, run_id, parent_run_id, tags, metadata, a, b, kwargs = record
        names = EVENT_KINDS[kind]
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        name = kwargs.pop("name", None)
        duration = None
        if kind in _STARTS:
            name = name if isinstance(name, str) else _serialized_name(a)
            if len(self._open) >= _MAX_OPEN_RUNS:  # runs that never end: forget the oldest
                self._open.pop(next(iter(self._open)))
            self._open[run_id] = (name, ts)
        elif kind in _ENDS:
            opened = self._open.pop(run_id, None)
            if opened is not None:
                name = name or opened[0]
                duration = ts - opened[1]
        elif name is None and run_id in self._open:
            name = self._open[run_id][0]
        data: dict[str, Any] = {}
        if names[0] is not None:
            data[names[0]] = _error_fields(a) if names[0] == "error" else a
        if names[1] is not None:
            data[names[1]] = b
        if kwargs:
            data.update(kwargs)
        self._count(kind, data, metadata)
        return {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "experiment": self.experiment,
            "run": self.run,
            "tracker": self.writer,
            "run_id": None if run_id is None else str(run_id),
            "parent_run_id": None if parent_run_id is None else str(parent_run_id),
            "name": name if isinstance(name, str) else None,
            "tags": tags or [],
            "metadata": metadata or {},
            "duration": duration,
            "data": data,
        }

    def _count(self, kind: str, data: dict[str, Any], metadata: Any) -> None:
        params = self.parameters
        params.counts[kind] += 1
        if kind in ("llm_start", "chat_model_start"):
            params.model_call(data.get("invocation_params"), metadata)
        elif kind == "llm_end":
            response = data.get("response")
            fields = response.fields if isinstance(response, FieldsSnapshot) else None
            if fields is None:
                return
            llm_output = fields.get("llm_output")
            if isinstance(llm_output, Mapping) and isinstance(llm_output.get("token_usage"), Mapping):
                params.usage(llm_output["token_usage"])
                return
            for generations in fields.get("generations") or ():
                for generation in generations or ():
                    message = (
                        generation.fields.get("message") if isinstance(generation, FieldsSnapshot) else None
                    )
                    if isinstance(message, FieldsSnapshot):
                        params.usage(message.fields.get("usage_metadata"))
