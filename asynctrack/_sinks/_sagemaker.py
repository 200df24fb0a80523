"""Run parameters in SageMaker Experiments (a parameter sink).

``SageMakerParameters`` is a parameter sink: on every flush it makes sure the
experiment, the run group (trial) and the run (trial component) exist, under the
names the SageMaker SDK's ``Run`` uses, so ``load_run`` and
``ExperimentAnalytics`` find them:

    experiment       <experiment>                       (lower-cased, like Run)
    run group        Default-Run-Group-<experiment>
    trial component  <experiment>-<run>                 tagged sagemaker:trial-component-source=run

then writes the run's parameters and one output artifact, ``asynctrack-events``,
that points at the run's events. It runs on the tracker's worker loop through
aiobotocore, so it never blocks the caller's loop.

AWS limits are checked here, not left to the service (one violation fails a
whole UpdateTrialComponent): at most 300 parameters (hyperparameters first, then
totals, then per-kind counts), string values cut to 2500 characters, NaN and
infinities skipped, names made to match ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}``.
Every cut or skip is logged once and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from .._errors import SinkError
from ._base import ParameterValue, RunInfo
from ._retry import RetryExhausted, retry

__all__ = [
    "EVENTS_ARTIFACT",
    "SageMakerParameters",
    "limit_parameters",
    "sagemaker_name",
]

logger = logging.getLogger("asynctrack")

MAX_PARAMETERS: Final = 300
MAX_STRING: Final = 2500
MAX_NAME: Final = 120
EVENTS_ARTIFACT: Final = "asynctrack-events"
EVENTS_MEDIA_TYPE: Final = "application/x-ndjson"
RUN_TC_TAG: Final = {"Key": "sagemaker:trial-component-source", "Value": "run"}
# Clients of a loop this process no longer runs (after fork): kept from the collector.
_ABANDONED: list[tuple[Any, Any]] = []
_NAME_OK: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}$")
_RETRYABLE: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "InternalFailure",
        "ServiceUnavailable",
        "InternalServerError",
        "RequestTimeout",
    }
)


def sagemaker_name(name: str, max_len: int = MAX_NAME) -> str:
    """``name`` lower-cased and made valid for SageMaker (``-`` for anything else).

    A name that had to change, or that is too long, keeps a short hash of the
    original so that two different names stay different.
    """
    lowered = name.lower()
    clean = re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "run"
    if clean == lowered and len(clean) <= max_len:
        return clean
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[: max_len - 9].rstrip('-')}-{digest}"


def _priority(key: str) -> int:
    if key.startswith("events_"):
        return 2 if key != "events_total" else 1
    if key.startswith("tokens_"):
        return 1
    return 0


def limit_parameters(
    parameters: Mapping[str, ParameterValue], room: int = MAX_PARAMETERS
) -> tuple[dict[str, ParameterValue], list[str]]:
    """Fit ``parameters`` within SageMaker's limits.

    Returns:
        The parameters to write, and one line per change made.
    """
    notes: list[str] = []
    out: dict[str, ParameterValue] = {}
    for key in sorted(parameters, key=lambda k: (_priority(k), k)):
        value = parameters[key]
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"parameter {key!r} skipped: {value} is not a finite number")
            continue
        if isinstance(value, str) and len(value) > MAX_STRING:
            notes.append(f"parameter {key!r} cut to {MAX_STRING} characters (was {len(value)})")
            value = value[:MAX_STRING]
        if len(out) >= room:
            notes.append(f"parameter {key!r} skipped: SageMaker keeps {MAX_PARAMETERS} per run")
            continue
        out[key[:256]] = value
    return out, notes


def _code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


class SageMakerParameters:
    """Writes a tracker's run parameters to SageMaker Experiments.

    Args:
        session: an ``aiobotocore.session.AioSession`` (default: a new one with
            the standard AWS configuration, ``AWS_ENDPOINT_URL`` included).
        endpoint_url: the SageMaker endpoint (default: the AWS configuration).
        region_name: the region (default: the configured one).
        deadline: seconds one save is retried for (throttling, 5xx, network).
    """

    def __init__(
        self,
        *,
        session: AioSession | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        deadline: float = 60.0,
    ) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._deadline = deadline
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._ready: set[tuple[str, str]] = set()
        self._noted: set[str] = set()
        self.adjustments = 0  # parameters cut or skipped to fit AWS limits

    @staticmethod
    def names(experiment: str, run: str) -> tuple[str, str, str]:
        """(experiment, run group, trial component) names, as the SDK's ``Run`` makes them."""
        experiment_name = sagemaker_name(experiment, 59)
        run_name = sagemaker_name(run, 59)
        return (
            experiment_name,
            f"Default-Run-Group-{experiment_name}"[:MAX_NAME],
            f"{experiment_name}-{run_name}",
        )

    async def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            # Made on another loop (the parent's, before a fork): unusable here and not
            # ours to close (see S3Sink._get_client).
            _ABANDONED.append((self._client, self._stack))
            self._client = self._stack = None
        if self._client is None:
            self._client_loop = loop
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                (self._session or get_session()).create_client(
                    "sagemaker",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region_name,
                    # One retry loop (ours) under one deadline; a stalled call must
                    # not hold every flush for botocore's 60 s x 5 attempts.
                    config=AioConfig(
                        retries={"total_max_attempts": 1},
                        connect_timeout=min(5.0, self._deadline),
                        read_timeout=min(30.0, self._deadline),
                    ),
                )
            )
            self._stack = stack
        return self._client

    async def aclose(self) -> None:
        if self._stack is not None and self._client_loop is not asyncio.get_running_loop():
            _ABANDONED.append((self._client, self._stack))
            self._client = self._stack = None
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    async def write_parameters(self, run: RunInfo, parameters: Mapping[str, ParameterValue]) -> None:
        experiment, trial, component = self.names(run.experiment, run.run)
        if experiment != run.experiment:
            self._note(f"experiment name {run.experiment!r} is {experiment!r} in SageMaker")
        limited, notes = limit_parameters(parameters)
        for note in notes:
            self.adjustments += 1
            self._note(note)
        await self._retrying(lambda: self._save(experiment, trial, component, run, limited))

    def _note(self, message: str) -> None:
        if message not in self._noted and len(self._noted) < 1000:
            self._noted.add(message)
            logger.warning("asynctrack (SageMaker): %s", message)

    async def _save(
        self, experiment: str, trial: str, component: str, run: RunInfo, parameters: dict[str, ParameterValue]
    ) -> None:
        client = await self._get_client()
        if (experiment, component) not in self._ready:
            await self._ensure(client, experiment, trial, component, run.run)
            self._ready.add((experiment, component))
        await client.update_trial_component(
            TrialComponentName=component,
            Parameters={
                key: {"StringValue": value} if isinstance(value, str) else {"NumberValue": float(value)}
                for key, value in parameters.items()
            },
            OutputArtifacts={EVENTS_ARTIFACT: {"Value": run.events_uri, "MediaType": EVENTS_MEDIA_TYPE}},
        )

    async def _ensure(self, client: Any, experiment: str, trial: str, component: str, display: str) -> None:
        """Describe-or-create each entity, like the SDK's ``_load_or_create``.

        A failed Describe is followed by a Create whatever its error code (AWS says
        ResourceNotFound; moto says ValidationException, or 500 for experiments);
        a Create that finds the entity already there is success. Creating blindly
        instead would, on moto, overwrite an existing run's parameters.
        """
        await _describe_or_create(
            lambda: client.describe_experiment(ExperimentName=experiment),
            lambda: client.create_experiment(ExperimentName=experiment),
        )
        await _describe_or_create(
            lambda: client.describe_trial(TrialName=trial),
            lambda: client.create_trial(TrialName=trial, ExperimentName=experiment),
        )
        await _describe_or_create(
            lambda: client.describe_trial_component(TrialComponentName=component),
            lambda: client.create_trial_component(
                TrialComponentName=component, DisplayName=display[:MAX_NAME], Tags=[dict(RUN_TC_TAG)]
            ),
        )
        try:
            await client.associate_trial_component(TrialComponentName=component, TrialName=trial)
        except ClientError as exc:
            if _code(exc) not in ("ResourceInUse", "ValidationException"):  # already associated
                raise

    async def _retrying(self, attempt: Callable[[], Awaitable[None]]) -> None:
        try:
            await retry(attempt, deadline=self._deadline, retryable=_retryable, first_delay=0.2)
        except RetryExhausted as exc:
            raise SinkError(
                "SageMaker Experiments",
                f"gave up after {exc.attempts} attempt(s) in {self._deadline:g} s (deadline): "
                f"{type(exc.last).__name__}: {exc.last}",
            ) from exc.last
        except (ClientError, BotoCoreError, OSError) as exc:
            raise SinkError("SageMaker Experiments", f"{type(exc).__name__}: {exc}") from exc


def _retryable(exc: Exception) -> bool:
    """Throttling, 5xx and network errors; not a validation or permission error."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return _code(exc) in _RETRYABLE or (isinstance(status, int) and status >= 500)
    return isinstance(exc, BotoCoreError | OSError)


_ALREADY_THERE: Final = ("already exists", "resourceinuse")


async def _describe_or_create(describe: Any, create: Any) -> None:
    try:
        await describe()
        return
    except ClientError as exc:
        if _code(exc) in _RETRYABLE:
            raise
    try:
        await create()
    except ClientError as exc:
        text = f"{_code(exc)} {exc}".lower()
        if not any(marker in text for marker in _ALREADY_THERE):
            raise
