"""Where batches go: a hive-partitioned key layout shared by every destination.

    <prefix>/experiment=<experiment>/run=<run>/date=<YYYY-MM-DD>/<HHMMSS>-<writer>-<batch>.jsonl[.gz]
    <prefix>/experiment=<experiment>/run=<run>/params/<writer>.json

``writer`` is unique per process (host, pid, random suffix; renewed after fork),
``batch`` counts up per writer, so many processes and machines can write to one
prefix without coordination, and a retried batch keeps its key. Names are made
safe: anything outside ``[A-Za-z0-9._-]`` becomes ``_``, ``.``/``..`` cannot
appear as a segment, and a changed or over-long name gets a short hash suffix so
that two different names never share a partition. A lone surrogate (``os.fsdecode``
of a non-UTF-8 file name, a command-line argument) cannot be written in JSON: the
tracker writes U+FFFD in its place, and ``safe_segment`` maps the name the same way
first, so the readers find a run by the name the user gave.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import socket
import time
from typing import Final

from ._capture import valid_text

__all__ = ["Layout", "new_writer_id", "safe_segment"]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SEGMENT: Final = 100
_HASHED: Final = re.compile(r"-[0-9a-f]{10}$")


def safe_segment(name: str) -> str:
    """Return ``name`` as one path segment that cannot escape its parent.

    A name and the same name with its lone surrogates replaced by U+FFFD give the
    same segment: the tracker writes the second (in the events' ``experiment`` and
    ``run`` fields too), the readers may be given the first.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = valid_text(name)
    clean = _UNSAFE.sub("_", name)
    if clean.strip(".") == "":
        clean = clean.replace(".", "_") or "_"
    # A name that already looks hashed is hashed again, so "a/b" (-> "a_b-<hash>")
    # and a literal "a_b-<hash>" cannot share a partition.
    if clean != name or len(clean) > _MAX_SEGMENT or _HASHED.search(clean):
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
        clean = f"{clean[: _MAX_SEGMENT - 11]}-{digest}"
    return clean


def new_writer_id() -> str:
    """A name unique to this process: host, pid and 48 random bits."""
    host = safe_segment(socket.gethostname() or "host")[:32]
    return f"{host}-{os.getpid()}-{secrets.token_hex(6)}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """The keys of one tracker's files, relative to its destination's prefix."""

    experiment: str
    run: str
    writer: str
    gzip: bool = False

    @property
    def run_prefix(self) -> str:
        """``experiment=<e>/run=<r>``: the partition holding the run's files."""
        return f"experiment={safe_segment(self.experiment)}/run={safe_segment(self.run)}"

    def batch_key(self, batch_number: int, when: float) -> str:
        """The key of batch ``batch_number``, dated by ``when`` (epoch seconds, UTC)."""
        tm = time.gmtime(when)
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        return (
            f"{self.run_prefix}/date={time.strftime('%Y-%m-%d', tm)}/"
            f"{time.strftime('%H%M%S', tm)}-{self.writer}-{batch_number:08d}{suffix}"
        )

    @property
    def params_key(self) -> str:
        """The key of this writer's run-parameters document."""
        return f"{self.run_prefix}/params/{self.writer}.json"
