"""Tracker configuration: one frozen dataclass, validated at construction."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["DEFAULT_REDACT_KEYS", "DEFAULT_REDACT_PATTERNS", "TrackerConfig"]

#: Searched in each key normalized into lower-case words joined by ``_``
#: (``clientSecret`` -> ``client_secret``, ``x-api-key`` -> ``x_api_key``,
#: ``PGPASSWORD`` -> ``pgpassword``; see ``asynctrack._redact``): a match redacts the
#: key's value. Glued words match too (``dbpassword``, ``openaiapikey``). ``token``
#: only at the end and not the tokenizer's special tokens, so that ``max_tokens``,
#: ``token_usage`` and ``eos_token`` stay readable. (The streamed text of
#: ``llm_new_token`` events, ``data.token``, is the library's own field and is not
#: redacted by key; its text is scanned like any other.)
DEFAULT_REDACT_KEYS: str = (
    r"passw|passphrase|pwd|secret(?!ar)|credential|cookie"
    r"|(?:^|_)auth(?:$|_)|auth(?:ori[sz]ation|entication)|(?:^|_)(?:o|basic|proxy)auth"
    r"|(?:api|private|access|secret|signing|encryption|master|account|client|app|session)_?keys?(?:$|_)"
    r"|(?<!eos_)(?<!bos_)(?<!pad_)(?<!unk_)(?<!sep_)(?<!cls_)(?<!mask_)(?<!stop_)(?<!special_)token$"
)

#: Kept for compatibility: the built-in value detectors are in ``asynctrack._redact``
#: (``redact_detectors``); ``redact_patterns`` adds regexes of your own to them.
DEFAULT_REDACT_PATTERNS: tuple[str, ...] = ()

KiB = 1024
MiB = 1024 * KiB


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrackerConfig:
    """How the tracker buffers, batches and encodes events.

    The defaults aim at an agent that records thousands of events per second and
    a destination (a disk or S3) that prefers fewer, larger objects.

    Args:
        max_batch_events: a batch file is written once it holds this many events.
            10 000 events of ~300 B make a ~3 MB file: large enough that S3's
            per-request cost and latency stay small, small enough to retry cheaply.
        max_batch_bytes: ... or once its encoded (uncompressed) lines reach this
            size (8 MiB, under S3's multipart threshold used by the S3 sink).
        batch_interval: ... or once its oldest event has waited this long (seconds).
            5 s, like OpenTelemetry's and Langfuse's exporters: an event reaches
            storage within ~5 s without flush(), and a quiet agent writes at most
            one file per 5 s.
        max_queue_events: events held in memory, not yet encoded, at most. Beyond
            it ``when_full`` applies.
        max_queue_bytes: encoded bytes held in memory (open batch, batches being
            written, failed batches kept for retry) at most. When reached, the
            worker stops taking events from the buffer, which then fills up. The
            buffer holds at most this many captured bytes too (beyond it
            ``when_full`` applies), in either worker mode.
        when_full: ``"drop"`` (the newest event is dropped and counted, the
            callback returns at once) or ``"block"`` (the callback waits up to
            ``block_timeout`` for room, then drops and counts).
        block_timeout: seconds a callback waits under ``when_full="block"``.
        max_field_bytes: longest string or bytes value kept per field; longer ones
            are cut and marked. 256 KiB keeps a long prompt or document whole.
        max_depth: nesting depth kept; deeper values (and cycles) are replaced by a
            marked placeholder.
        gzip: compress batch files (``.jsonl.gz``).
        max_concurrent_writes: batch writes in flight at once.
        redact_keys: regex searched in each key normalized into lower-case words
            joined by ``_`` (``clientSecret`` -> ``client_secret``); a match redacts
            the key's value, in JSON structure and in ``key=value`` / ``key: value``
            text alike. ``None`` turns key rules off. See README "Redaction".
        redact_patterns: regexes of your own (as bytes patterns, matched against
            the JSON text of every event) whose matches are redacted, on top of
            the built-in detectors. Keep them linear: bounded or possessive
            quantifiers, no nested repetition.
        redact_detectors: run the built-in credential-format detectors (API keys
            of the common providers, AWS keys, JWTs, private keys, URL passwords,
            ...) on every text written.
        spool: keep batches a remote destination (S3) did not take by the close
            deadline, or that no longer fit in memory while it is down, in a
            local spool directory; the next tracker on the same destination and
            spool, or ``asynctrack replay``, delivers them. A local destination
            never spools.
        spool_dir: the spool directory. Default: ``$ASYNCTRACK_SPOOL_DIR``, else
            ``~/.cache/asynctrack/spool``.
        spool_max_bytes: the most the spool directory may hold (1 GiB); a batch
            that does not fit is not spooled, and counted as lost.
        handle_sigterm: on SIGTERM, close every open tracker (flush, spool what
            is left, within ``ASYNCTRACK_EXIT_TIMEOUT`` seconds, default 10) and
            then die of the signal as before. Installed only in the main thread
            and only while no other SIGTERM handler is set.
        redact: a hook called in the worker (never on the caller's thread) with
            each event as a dict; it returns the dict to write (changed in place
            or new), or ``None`` to drop the event (counted as ``filtered``). In
            the worker process it must be picklable (a module-level function);
            otherwise the tracker uses a worker thread.
        worker: where the worker runs. ``"process"``: a worker process shared by
            every tracker of this process (the application only captures and
            ships bytes; a kill of the application loses milliseconds).
            ``"thread"``: a thread in this interpreter. ``None`` (default):
            ``$ASYNCTRACK_WORKER``, else ``"process"``; a thread is used, with one
            log line saying why, where a process cannot be started or the
            destination, hook or parameter sinks cannot cross to it (a ``Sink``
            object, a lambda).
        sample_rate: the share of traces (a root run and every run under it)
            recorded, from 0.0 to 1.0. Decided once per trace at its root, from
            the low 64 bits of the root's run id as OpenTelemetry's
            ``TraceIdRatioBased`` sampler decides from the trace id (a collector
            with the same ratio keeps the same traces); a root started inside an
            application OpenTelemetry span follows that span's sampled flag.
            1.0 (default): everything is recorded and nothing is looked up.
        sample_keep_errors: with ``sample_rate`` under 1.0, also keep every
            trace not sampled in which a run failed, whole: such traces are
            captured, and the worker holds their lines (at most
            ``max_queue_bytes // 4`` bytes) until a run fails (then they are
            written, marked ``"sampled": false``) or the root ends (then they
            are dropped, counted in ``statistics().sampled_out``). Past that
            bound the oldest trace's held lines are dropped: if it fails later,
            its failure and later lines are still written, and the lines it lost
            are counted in ``statistics().sampled_out_failing`` (a warning says
            it once). Off: a trace not sampled is not captured at all.
    """

    max_batch_events: int = 10_000
    max_batch_bytes: int = 8 * MiB
    batch_interval: float = 5.0
    max_queue_events: int = 100_000
    max_queue_bytes: int = 64 * MiB
    when_full: Literal["drop", "block"] = "drop"
    block_timeout: float = 1.0
    max_field_bytes: int = 256 * KiB
    max_depth: int = 32
    gzip: bool = False
    max_concurrent_writes: int = 4
    redact_keys: str | None = DEFAULT_REDACT_KEYS
    redact_patterns: tuple[str, ...] = DEFAULT_REDACT_PATTERNS
    redact_detectors: bool = True
    spool: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 1024 * MiB
    handle_sigterm: bool = True
    worker: Literal["process", "thread"] | None = None
    redact: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None
    sample_rate: float = 1.0
    sample_keep_errors: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_batch_events",
            "max_batch_bytes",
            "max_queue_events",
            "max_queue_bytes",
            "max_field_bytes",
            "max_depth",
            "max_concurrent_writes",
            "spool_max_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("batch_interval", "block_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.redact_patterns, tuple) or not all(
            isinstance(p, str) for p in self.redact_patterns
        ):
            raise ValueError(
                f"redact_patterns must be a tuple of regex strings, got {self.redact_patterns!r}"
            )
        if self.redact_keys is not None and not isinstance(self.redact_keys, str):
            raise ValueError(f"redact_keys must be a regex string or None, got {self.redact_keys!r}")
        if self.worker not in (None, "process", "thread"):
            raise ValueError(f"worker must be 'process', 'thread' or None, got {self.worker!r}")
        if not isinstance(self.redact_detectors, bool):
            raise ValueError(f"redact_detectors must be a bool, got {self.redact_detectors!r}")
        if self.when_full not in ("drop", "block"):
            raise ValueError(f"when_full must be 'drop' or 'block', got {self.when_full!r}")
        if self.max_queue_bytes < self.max_batch_bytes:
            raise ValueError(
                f"max_queue_bytes ({self.max_queue_bytes}) must be at least "
                f"max_batch_bytes ({self.max_batch_bytes})"
            )
        for pattern in (self.redact_keys, *self.redact_patterns):
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid redaction regex {pattern!r}: {exc}") from None
        rate = self.sample_rate
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate must be a number from 0.0 to 1.0, got {rate!r}")
        if not isinstance(self.sample_keep_errors, bool):
            raise ValueError(f"sample_keep_errors must be a bool, got {self.sample_keep_errors!r}")
        if self.redact is not None and not callable(self.redact):
            raise ValueError(f"redact must be callable, got {self.redact!r}")
