"""The S3 destination, on aiobotocore.

One PutObject per batch (multipart above ``multipart_threshold``), under the
shared key layout, retried with exponential backoff and full jitter within
``write_deadline``. A retried batch keeps its key and its bytes, so a retry can
only overwrite an object with identical content: never a duplicate event.

Errors are sorted in two: those retrying can fix (throttling, 5xx, timeouts,
dropped connections, truncated responses) and those it cannot (no such bucket,
access denied, bad credentials, a KMS key that does not exist). The second kind
raises ``PermanentSinkError`` at once; ``start()`` checks the bucket the same way,
so a wrong bucket shows up at the first flush with a clear message.

botocore's own retries are turned off (``total_max_attempts=1``): one retry loop,
ours, with one deadline, and every attempt counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Final, Literal, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from .._errors import PermanentSinkError, SinkError
from ._base import Batch
from ._retry import RetryExhausted, retry

__all__ = ["S3Sink", "list_keys", "parse_s3_uri", "read_objects"]

_T = TypeVar("_T")

logger = logging.getLogger("asynctrack")

_PERMANENT_CODES: Final = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "InvalidArgument",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidToken",
        "KMS.NotFoundException",
        "KMS.DisabledException",
        "KMS.KMSInvalidStateException",
        "NotFound",
        "404",
        "403",
        "Forbidden",
    }
)
_PERMANENT_TYPES: Final = (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)
_MiB: Final = 1024 * 1024
# Clients abandoned on a loop this process no longer runs (see S3Sink._get_client):
# closing them would touch another loop's (or process's) connections, and letting
# them be collected would warn about unclosed sessions.
_ABANDONED: list[tuple[Any, Any]] = []


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → ``("bucket", "some/prefix")``.

    Raises:
        ValueError: not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def _endpoint_from_environment() -> str | None:
    """The S3 endpoint botocore takes from the environment, if one is set there."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot fix ``exc``."""
    if isinstance(exc, _PERMANENT_TYPES):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _PERMANENT_CODES:
            return True
        if isinstance(status, int) and status in (401, 403, 404):
            return True
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{error.get('Code', 'error')} (HTTP {status}): {error.get('Message', '') or exc}"
    return f"{type(exc).__name__}: {exc}"


class S3Sink:
    """Writes batch files to ``s3://bucket/prefix`` with aiobotocore.

    Args:
        uri: ``s3://bucket/prefix``.
        session: an ``aiobotocore.session.AioSession`` (profiles, credentials);
            by default a new one with the standard AWS configuration
            (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, the credential chain).
        profile: an AWS profile name (ignored when ``session`` is given).
        endpoint_url: overrides the endpoint (``AWS_ENDPOINT_URL`` works too).
        region_name: the region (default: the configured one).
        server_side_encryption: ``"AES256"`` or ``"aws:kms"``.
        sse_kms_key_id: the KMS key for ``"aws:kms"``.
        expected_bucket_owner: sent as ``ExpectedBucketOwner`` on every call.
        write_deadline: seconds one batch is retried for before the engine
            keeps it as failed (it is retried again later and by ``flush()``).
        connect_timeout: seconds per connection attempt.
        read_timeout: seconds to wait for a response.
        max_pool_connections: HTTP connections kept (at least the engine's
            ``max_concurrent_writes``).
        multipart_threshold: batches larger than this go up in parts.
        part_size: the size of each part.
        content_type: for uncompressed batches.
    """

    def __init__(
        self,
        uri: str,
        *,
        session: AioSession | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        server_side_encryption: Literal["AES256", "aws:kms"] | None = None,
        sse_kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        write_deadline: float = 60.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_pool_connections: int = 16,
        multipart_threshold: int = 64 * _MiB,
        part_size: int = 16 * _MiB,
        content_type: str = "application/x-ndjson",
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        if server_side_encryption not in (None, "AES256", "aws:kms"):
            raise ValueError(
                f"server_side_encryption must be 'AES256' or 'aws:kms', got {server_side_encryption!r}"
            )
        if sse_kms_key_id is not None and server_side_encryption != "aws:kms":
            raise ValueError("sse_kms_key_id needs server_side_encryption='aws:kms'")
        if part_size < 5 * _MiB:
            raise ValueError(f"part_size must be at least 5 MiB (S3's minimum), got {part_size}")
        if multipart_threshold < part_size:
            raise ValueError("multipart_threshold must be at least part_size")
        for name, value in (
            ("write_deadline", write_deadline),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._session = session
        self._profile = profile
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._sse = server_side_encryption
        self._kms_key = sse_kms_key_id
        self._owner = expected_bucket_owner
        self.write_deadline = write_deadline
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1},
            max_pool_connections=max_pool_connections,
        )
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._content_type = content_type
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.attempts = 0  # requests made, retries included (for tests and benchmarks)
        self.retries = 0

    @property
    def destination(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def replay_options(self) -> dict[str, str]:
        """The non-secret options a later replay of this sink's spool must reuse."""
        # The endpoint and profile travel with the spool, so that `asynctrack replay`
        # reaches the same S3 (a moto or MinIO endpoint) without being told again.
        options = {
            "endpoint_url": self._endpoint_url or _endpoint_from_environment(),
            "profile": self._profile,
            "server_side_encryption": self._sse,
            "sse_kms_key_id": self._kms_key,
            "expected_bucket_owner": self._owner,
            "region_name": self._region_name,
        }
        return {key: value for key, value in options.items() if value}

    def object_key(self, key: str) -> str:
        """The full S3 key of a layout key."""
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- lifecycle -------------------------------------------------------------------

    async def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            # Made on another loop: the parent's, before a fork (its connections are the
            # parent's sockets), or a loop since closed. Unusable here ("attached to a
            # different loop"), and not ours to close: forgotten, kept from the collector.
            _ABANDONED.append((self._client, self._stack))
            self._client = self._stack = None
        if self._client is None:
            self._client_loop = loop
            session = self._session or (AioSession(profile=self._profile) if self._profile else get_session())
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region_name,
                    config=self._config,
                )
            )
            self._stack = stack
        return self._client

    async def start(self) -> None:
        """Check the bucket exists and is ours to write (HeadBucket)."""
        try:
            client = await self._get_client()
            await client.head_bucket(Bucket=self.bucket, **self._owner_args())
        except Exception as exc:
            if is_permanent(exc):
                raise PermanentSinkError(self.destination, f"bucket not usable: {_describe(exc)}") from exc
            raise SinkError(self.destination, f"bucket check failed: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        if self._stack is not None and self._client_loop is not asyncio.get_running_loop():
            _ABANDONED.append((self._client, self._stack))  # another loop's: see _get_client
            self._client = self._stack = None
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    # -- writes ----------------------------------------------------------------------

    def _owner_args(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self._owner} if self._owner else {}

    def _put_args(self, key: str, gzip: bool) -> dict[str, str]:
        args: dict[str, str] = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "ContentType": "application/gzip" if gzip else self._content_type,
            **self._owner_args(),
        }
        if self._sse:
            args["ServerSideEncryption"] = self._sse
        if self._kms_key:
            args["SSEKMSKeyId"] = self._kms_key
        return args

    async def write_batch(self, batch: Batch) -> None:
        if len(batch.data) > self._multipart_threshold:
            await self._retrying(batch.key, lambda: self._multipart(batch))
        else:
            args = self._put_args(batch.key, batch.gzip)
            await self._retrying(batch.key, lambda: self._put(args, batch.data))

    async def write_document(self, key: str, data: bytes) -> None:
        args = self._put_args(key, gzip=False)
        args["ContentType"] = "application/json"
        await self._retrying(key, lambda: self._put(args, data))

    async def _put(self, args: dict[str, str], data: bytes) -> None:
        client = await self._get_client()
        await client.put_object(Body=data, **args)

    async def _multipart(self, batch: Batch) -> None:
        client = await self._get_client()
        args = self._put_args(batch.key, batch.gzip)
        upload = await client.create_multipart_upload(**args)
        upload_id = upload["UploadId"]
        common = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload_id, **self._owner_args()}
        try:
            parts = []
            view = memoryview(batch.data)
            for number, start in enumerate(range(0, len(view), self._part_size), start=1):
                part = await client.upload_part(
                    PartNumber=number, Body=bytes(view[start : start + self._part_size]), **common
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            await client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **common)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(**common)
            raise

    async def _retrying(self, key: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt()`` until it succeeds, fails for good, or ``write_deadline`` passes.

        Any error but a permanent one is retried: aiohttp and others raise their own
        errors for broken responses, transient until proven otherwise.
        """
        try:
            await retry(attempt, deadline=self.write_deadline, retryable=_transient, on_attempt=self._count)
        except RetryExhausted as exc:
            raise SinkError(
                self.destination,
                f"{self.object_key(key)}: gave up after {exc.attempts} attempt(s) in "
                f"{self.write_deadline:g} s: {_describe(exc.last)}",
            ) from exc.last
        except Exception as exc:
            if is_permanent(exc):
                where = self.object_key(key)
                raise PermanentSinkError(self.destination, f"{where}: {_describe(exc)}") from exc
            raise

    def _count(self, attempt: int) -> None:
        self.attempts += 1
        if attempt > 1:
            self.retries += 1


def _transient(exc: Exception) -> bool:
    return not is_permanent(exc)


def _run_sync(uri: str, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a private thread with its own event loop.

    The read helpers are synchronous (``load()``, the CLI); a private thread lets
    them work when called from inside a running loop too.

    Raises:
        SinkError: an AWS error (no credentials, no such bucket, access denied),
            described in one line, the botocore exception as its cause.
    """
    result: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="asynctrack-read")
    thread.start()
    thread.join()
    if errors:
        if isinstance(errors[0], ClientError | BotoCoreError):
            raise SinkError(uri, f"reading failed: {_describe(errors[0])}") from errors[0]
        raise errors[0]
    return result[0]


def _read_session(session: AioSession | None, profile: str | None) -> AioSession:
    return session or (AioSession(profile=profile) if profile else get_session())


def read_objects(
    uri: str,
    pattern: str,
    *,
    session: AioSession | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Download the objects under ``uri`` whose relative key matches ``pattern``.

    Synchronous (used by ``read_events()``); see ``_run_sync``.
    """
    bucket, prefix = parse_s3_uri(uri)
    base = f"{prefix}/" if prefix else ""
    listing_prefix = base + pattern.split("*", 1)[0]
    listing_prefix = listing_prefix.rsplit("/", 1)[0] + "/" if "/" in listing_prefix else base

    async def fetch() -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        async with _read_session(session, profile).create_client(
            "s3", endpoint_url=endpoint_url, region_name=region_name
        ) as client:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=listing_prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    relative = key[len(base) :]
                    if fnmatch.fnmatchcase(relative, pattern):
                        response = await client.get_object(Bucket=bucket, Key=key)
                        async with response["Body"] as body:
                            out.append((key.rsplit("/", 1)[-1], await body.read()))
        return out

    yield from _run_sync(uri, fetch)


def list_keys(
    uri: str,
    prefixes: Sequence[str],
    *,
    session: AioSession | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The keys under ``uri`` that start with one of ``prefixes`` (relative to ``uri``).

    Lists only below those prefixes: a scan of one run lists that run's objects,
    not the bucket's. Also resolves, with the same session the tracker would
    use, the credentials, region and endpoint as Polars ``storage_options``.

    Returns:
        The matching keys, relative to ``uri``, and the storage options.
    """
    bucket, prefix = parse_s3_uri(uri)
    base = f"{prefix}/" if prefix else ""

    async def fetch() -> tuple[list[str], dict[str, str]]:
        aio_session = _read_session(session, profile)
        keys: list[str] = []
        async with aio_session.create_client(
            "s3", endpoint_url=endpoint_url, region_name=region_name
        ) as client:
            paginator = client.get_paginator("list_objects_v2")
            for relative_prefix in prefixes:
                async for page in paginator.paginate(Bucket=bucket, Prefix=base + relative_prefix):
                    keys.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
            options = {"aws_region": str(client.meta.region_name or "us-east-1")}
            endpoint = endpoint_url or _endpoint_from_environment()
            if endpoint:
                options["aws_endpoint_url"] = endpoint
                if endpoint.startswith("http://"):
                    options["aws_allow_http"] = "true"
            credentials = await aio_session.get_credentials()
            if credentials is not None:
                frozen = await credentials.get_frozen_credentials()
                options["aws_access_key_id"] = frozen.access_key
                options["aws_secret_access_key"] = frozen.secret_key
                if frozen.token:
                    options["aws_session_token"] = frozen.token
        return keys, options

    return _run_sync(uri, fetch)
