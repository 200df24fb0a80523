"""The seed's handler as a drop-in: ``SageMakerCallbackHandler(run)``.

It replaces langchain-community's handler of that name: the same constructor and
``flush_tracker()``, but events go to S3 in batches off the hot path, and
``flush_tracker()`` records the parameters and the events artifact on the SDK
``Run`` itself, so the ``with Run(...)`` exit persists them in its own
UpdateTrialComponent.
"""

from __future__ import annotations

import logging
from typing import Any

from aiobotocore.session import AioSession, get_session

from .._config import TrackerConfig
from .._sinks._sagemaker import EVENTS_ARTIFACT, EVENTS_MEDIA_TYPE, MAX_PARAMETERS, limit_parameters
from ._handler import AsyncTracker

__all__ = ["SageMakerCallbackHandler"]

logger = logging.getLogger("asynctrack")


def _run_session(run: Any) -> Any:
    uploader = getattr(run, "_artifact_uploader", None)
    session = getattr(uploader, "sagemaker_session", None)
    if session is None:
        raise ValueError(
            f"{run!r} does not look like a SageMaker SDK Run "
            "(sagemaker.core.experiments.run.Run or sagemaker.experiments.run.Run)"
        )
    return session


class SageMakerCallbackHandler(AsyncTracker):
    """Drop-in for langchain-community's ``SageMakerCallbackHandler``.

    ``SageMakerCallbackHandler(run)`` with an SDK ``Run`` (v3's
    ``sagemaker.core.experiments.run.Run``, or v2's ``sagemaker.experiments.run.Run``)
    records every event to ``s3://<bucket>/<prefix>/experiment=<e>/run=<r>/...``,
    where ``bucket`` is the run's artifact bucket or its session's default bucket.

    Args:
        run: the SageMaker SDK ``Run`` the events belong to.
        bucket: overrides the bucket.
        prefix: the key prefix inside the bucket.
        config: the tracker configuration.
        **s3_options: passed to ``S3Sink`` (``endpoint_url``, encryption, ...).
    """

    def __init__(
        self,
        run: Any,
        *,
        bucket: str | None = None,
        prefix: str = "asynctrack",
        config: TrackerConfig | None = None,
        **s3_options: Any,
    ) -> None:
        session = _run_session(run)
        uploader = getattr(run, "_artifact_uploader", None)
        bucket = bucket or getattr(uploader, "artifact_bucket", None) or session.default_bucket()
        boto_session = getattr(session, "boto_session", None)
        if boto_session is not None and "session" not in s3_options:
            s3_options["session"] = _aio_session_like(boto_session)
            s3_options.setdefault("region_name", boto_session.region_name)
        self._run = run
        super().__init__(
            f"s3://{bucket}/{prefix.strip('/')}",
            experiment_name=run.experiment_name,
            run_name=run.run_name,
            config=config,
            **s3_options,
        )

    def flush_tracker(self, timeout: float | None = 60.0) -> None:
        """Write every event so far, then record parameters and the events link on the Run.

        The ``Run``'s own exit (``with Run(...)``) persists them. The handler keeps
        working afterwards. Must be called inside the ``with Run(...)`` block, like
        the SDK's own ``log_*`` methods.

        Raises:
            FlushError: some events could not be written (nothing is discarded).
        """
        self.flush_blocking(timeout)
        existing = getattr(getattr(self._run, "_trial_component", None), "parameters", None) or {}
        parameters = self._engine.last_parameters  # what this flush wrote, redacted
        ours = set(parameters)
        room = MAX_PARAMETERS - len([k for k in existing if k not in ours])
        limited, notes = limit_parameters(parameters, room=max(room, 0))
        for note in notes:
            logger.warning("asynctrack (SageMaker): %s", note)
        self._run.log_parameters(limited)
        self._run.log_artifact(
            name=EVENTS_ARTIFACT, value=self.events_uri, media_type=EVENTS_MEDIA_TYPE, is_output=True
        )

    def __del__(self) -> None:
        # The seed notebook never closes its handler; the tracker is closed (and
        # flushed) at interpreter exit, so there is nothing to warn about.
        return None


def _aio_session_like(boto_session: Any) -> AioSession:
    """An aiobotocore session with the same profile and credentials as a boto3 session."""
    profile = getattr(boto_session, "profile_name", None)
    aio = AioSession(profile=profile) if profile and profile != "default" else get_session()
    credentials = boto_session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        aio.set_credentials(frozen.access_key, frozen.secret_key, frozen.token)
    return aio
