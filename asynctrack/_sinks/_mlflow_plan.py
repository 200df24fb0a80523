"""MLflow's limits, and a run summary fitted to them before any call (``plan_write``).

Key characters and length, parameter and tag value lengths, entities per batch and
the request size (read from ``mlflow.utils.validation`` when it has them). Every
change is returned as a note; the sink logs each once and counts it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from ._base import RunInfo, RunSummary

__all__ = [
    "CHANGED_PARAMETER_TAG",
    "EVENTS_TAG",
    "EXPERIMENT_TAG",
    "NOTE_TAG",
    "RUN_KEY_TAG",
    "RUN_TAG",
    "MLflowLimits",
    "Plan",
    "batches",
    "limit_in",
    "mlflow_key",
    "plan_write",
    "run_key",
]

RUN_KEY_TAG: Final = "asynctrack.run_key"
EVENTS_TAG: Final = "asynctrack.events_uri"
EXPERIMENT_TAG: Final = "asynctrack.experiment"
RUN_TAG: Final = "asynctrack.run"
CHANGED_PARAMETER_TAG: Final = "asynctrack.param."
NOTE_TAG: Final = "mlflow.note.content"  # the run's description in the MLflow UI
_KEY_BAD: Final = re.compile(r"[^\w.\- ]")  # MLflow allows these (and "/" and ":" off Windows)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MLflowLimits:
    """MLflow's limits on one run's data (the defaults are MLflow 2.x and 3.x's)."""

    key_length: int = 250
    param_value_length: int = 6000
    tag_value_length: int = 8000
    params_tags_per_batch: int = 100
    metrics_per_batch: int = 1000
    entities_per_batch: int = 1000
    request_bytes: int = 1_000_000

    @classmethod
    def installed(cls) -> MLflowLimits:
        """The limits of the installed MLflow (``mlflow.utils.validation``)."""
        from mlflow.utils import validation

        default = cls()
        return cls(
            key_length=limit_in(validation, "MAX_ENTITY_KEY_LENGTH", default.key_length),
            param_value_length=limit_in(validation, "MAX_PARAM_VAL_LENGTH", default.param_value_length),
            tag_value_length=limit_in(validation, "MAX_TAG_VAL_LENGTH", default.tag_value_length),
            params_tags_per_batch=limit_in(
                validation, "MAX_PARAMS_TAGS_PER_BATCH", default.params_tags_per_batch
            ),
            metrics_per_batch=limit_in(validation, "MAX_METRICS_PER_BATCH", default.metrics_per_batch),
            entities_per_batch=limit_in(validation, "MAX_ENTITIES_PER_BATCH", default.entities_per_batch),
            request_bytes=limit_in(validation, "MAX_BATCH_LOG_REQUEST_SIZE", default.request_bytes),
        )


def limit_in(module: Any, name: str, fallback: int) -> int:
    """The installed MLflow's limit ``name`` in ``module``, if it is a positive int there;
    else ``fallback`` (an older or newer MLflow without it)."""
    value = getattr(module, name, fallback)
    return value if isinstance(value, int) and value > 0 else fallback


def run_key(experiment: str, run: str) -> str:
    """The value of the ``asynctrack.run_key`` tag: the same names, the same key."""
    joined = f"{experiment}\0{run}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:32]


def mlflow_key(name: str, max_len: int = 250) -> str:
    """``name`` made valid as an MLflow parameter, metric or tag key.

    Characters other than letters, digits, ``_``, ``-``, ``.`` and space become
    ``_`` (``/`` and ``:`` too: they are file paths on some stores and invalid on
    Windows). A name that had to change, or that is too long, keeps a short hash
    of the original so that two different names stay different.
    """
    clean = _KEY_BAD.sub("_", name).strip()
    if clean.strip(".") == "":
        clean = "_" + clean  # "." and ".." are paths, not names
    if clean == name and len(clean) <= max_len:
        return clean
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[: max_len - 9]}-{digest}"


@dataclasses.dataclass(slots=True)
class Plan:
    """One write, fitted to MLflow's limits; ``notes`` says what was changed."""

    parameters: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    notes: list[str]


def plan_write(
    run: RunInfo,
    summary: RunSummary,
    extra_tags: Mapping[str, str],
    limits: MLflowLimits,
) -> Plan:
    """Fit a summary to MLflow's limits: keys, value lengths, finite metrics."""
    notes: list[str] = []

    def key_of(kind: str, name: str, max_len: int = limits.key_length) -> str:
        key = mlflow_key(name, max_len)
        if key != name:
            notes.append(f"{kind} {name!r} is {key!r} in MLflow (MLflow's key rules)")
        return key

    def cut(kind: str, name: str, value: str, limit: int) -> str:
        if len(value) <= limit:
            return value
        notes.append(f"{kind} {name!r} cut to {limit} characters (was {len(value)})")
        return value[:limit]

    parameters: dict[str, str] = {}
    for name, value in summary.hyperparameters.items():
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"parameter {name!r} skipped: {value} is not a finite number")
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parameters[key_of("parameter", name)] = cut("parameter", name, text, limits.param_value_length)
    metrics: dict[str, float] = {}
    for name, number in summary.metrics.items():
        if not isinstance(number, int | float) or isinstance(number, bool) or not math.isfinite(number):
            notes.append(f"metric {name!r} skipped: {number!r} is not a finite number")
            continue
        metrics[key_of("metric", name)] = float(number)
    tags = {
        RUN_KEY_TAG: run_key(run.experiment, run.run),
        EXPERIMENT_TAG: cut("tag", EXPERIMENT_TAG, run.experiment, limits.tag_value_length),
        RUN_TAG: cut("tag", RUN_TAG, run.run, limits.tag_value_length),
        EVENTS_TAG: cut("tag", EVENTS_TAG, run.events_uri, limits.tag_value_length),
    }
    for name, text in extra_tags.items():
        tags[key_of("tag", name)] = cut("tag", name, str(text), limits.tag_value_length)
    return Plan(parameters=parameters, metrics=metrics, tags=tags, notes=notes)


def batches(
    metrics: list[Any], parameters: list[Any], tags: list[Any], limits: MLflowLimits
) -> list[tuple[list[Any], list[Any], list[Any]]]:
    """Split entities (with ``key`` and ``value``) into ``log_batch`` calls within the limits.

    Returns:
        ``(metrics, parameters, tags)`` per call, in order, none empty.
    """
    out: list[tuple[list[Any], list[Any], list[Any]]] = []
    current: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    size = 0
    budget = limits.request_bytes // 2  # JSON framing and escapes: stay well under
    for slot, items in enumerate((metrics, parameters, tags)):
        cap = limits.metrics_per_batch if slot == 0 else limits.params_tags_per_batch
        for item in items:
            weight = len(str(item.key).encode()) + len(str(item.value).encode()) + 64
            if (
                len(current[slot]) >= cap
                or sum(map(len, current)) >= limits.entities_per_batch
                or (size + weight > budget and any(current))
            ):
                out.append(current)
                current, size = ([], [], []), 0
            current[slot].append(item)
            size += weight
    if any(current):
        out.append(current)
    return out
