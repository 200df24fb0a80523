"""A run's parameters: hyperparameters seen, event counts, tokens, latency (worker side)."""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._sinks._base import ParameterValue
from ._schema import ENDS

__all__ = ["RunParameters"]

#: The latency group of each end event (a chat model ends with ``llm_end`` too).
_LATENCY_GROUP: Final = {
    kind: kind.rsplit("_", 1)[0]
    for kind in ENDS
    if kind.startswith(("chain_", "llm_", "tool_", "retriever_"))
}
#: Durations kept per group for the percentiles; past it, a uniform sample of
#: every duration seen (reservoir sampling), so memory stays bounded on long runs
#: and a flush sorts at most this many floats (about 1 ms).
_LATENCY_SAMPLE: Final = 4096
_MAX_NAMES: Final = 10_000  # parameter keys judged and remembered (they can be data)
_TOKEN_METRICS: Final = {"prompt": "tokens_in", "completion": "tokens_out", "total": "tokens_total"}
#: Ours, and the keys of OpenAI's ``token_usage`` or LangChain's ``usage_metadata`` for it.
_USAGE_KEYS: Final = (
    ("prompt", ("prompt_tokens", "input_tokens")),
    ("completion", ("completion_tokens", "output_tokens")),
    ("total", ("total_tokens",)),
)
_HYPER_KEYS_FROM_METADATA: Final = {
    "ls_model_name": "model_name",
    "ls_temperature": "temperature",
    "ls_max_tokens": "max_tokens",
    "ls_provider": "provider",
    "ls_model_type": "model_type",
}


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
    sorted, comma-separated list. Keys ``secret_key`` judges secret (the tracker's key
    rule, as the event lines judge keys) are never collected, nor their values.
    """

    def __init__(self, secret_key: Callable[[str], bool] | None) -> None:
        self._secret = secret_key
        self.counts: collections.Counter[str] = collections.Counter()
        self.hyper: dict[str, dict[ParameterValue, None]] = {}
        # A plain dict: a Counter's item assignment is a Python-level slot (it defines
        # __delitem__), three per model end.
        self.tokens: dict[str, int] = {}
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
            if self._secret is not None and self._secret(key):
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
        # A dict first: the Mapping ABC's check costs more than the rest (once per model end).
        if type(usage) is not dict and not isinstance(usage, Mapping):
            return
        get = usage.get
        tokens = self.tokens
        for ours, theirs in _USAGE_KEYS:
            for key in theirs:
                value = get(key)
                if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
                    tokens[ours] = tokens.get(ours, 0) + value
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
