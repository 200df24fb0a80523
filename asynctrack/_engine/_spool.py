"""The spool: batches that could not be delivered, kept on local disk.

When the destination stays down past the close deadline (or memory runs short
while it is down), batch files go to ``<spool_dir>/<destination id>/`` instead
of being dropped. The next tracker started on the same destination and spool,
or ``asynctrack replay SPOOL``, sends them under their original keys (a resend
overwrites an identical object, never duplicates one) and deletes each file once
its destination has acknowledged it.

Layout::

    <spool_dir>/<sha256(destination)[:16]>/destination.txt      the destination URI
    <spool_dir>/<sha256(destination)[:16]>/options.json         its non-secret write options
                                                                 (encryption, bucket owner)
    <spool_dir>/<sha256(destination)[:16]>/<events>.<base64url(key)>.batch

Files are written whole (write, fsync, rename). The spool is bounded by
``max_bytes``: a batch that does not fit is not spooled and is counted as lost
(newest refused, like the in-memory buffer), with an error logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Final

from .._sinks._base import Batch

__all__ = ["Spool", "spooled_destinations"]

_SUFFIX: Final = ".batch"
_DESTINATION: Final = "destination.txt"
_OPTIONS: Final = "options.json"


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Spool:
    """The spooled batches of one destination.

    Args:
        root: the spool directory (shared by destinations).
        destination: the destination URI the batches belong to.
        max_bytes: the most the whole spool directory may hold.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        destination: str,
        max_bytes: int,
        options: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.destination = destination
        self.options = dict(options or {})
        self.directory = self.root / hashlib.sha256(destination.encode()).hexdigest()[:16]
        self.max_bytes = max_bytes

    def size(self) -> int:
        """Bytes in the whole spool directory."""
        total = 0
        if self.root.is_dir():
            for path in self.root.rglob(f"*{_SUFFIX}"):
                try:
                    total += path.stat().st_size
                except OSError:  # delivered and deleted meanwhile
                    pass
        return total

    def save(self, batch: Batch) -> str | None:
        """Write ``batch`` to the spool; its path, or ``None`` if the spool is full."""
        if self.size() + len(batch.data) > self.max_bytes:
            return None
        marker = self.directory / _DESTINATION
        if not marker.exists():
            _write_whole(self.directory / _OPTIONS, json.dumps(self.options).encode())
            _write_whole(marker, self.destination.encode())
        name = base64.urlsafe_b64encode(batch.key.encode()).decode()
        path = self.directory / f"{batch.events}.{name}{_SUFFIX}"
        _write_whole(path, batch.data)
        return str(path)

    def pending(self) -> list[Batch]:
        """The spooled batches, data not loaded (``spool_path`` set), oldest first."""
        if not self.directory.is_dir():
            return []
        out: list[Batch] = []
        paths = sorted(self.directory.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        for path in paths:
            events, _, name = path.name[: -len(_SUFFIX)].partition(".")
            try:
                key = base64.urlsafe_b64decode(name).decode()
                count = int(events)
            except ValueError:
                continue  # not ours
            out.append(
                Batch(
                    key=key,
                    data=b"",
                    events=count,
                    first_seq=-1,
                    last_seq=-1,
                    gzip=key.endswith(".gz"),
                    spool_path=str(path),
                )
            )
        return out

    @staticmethod
    def load(batch: Batch) -> Batch:
        """``batch`` with its data read from the spool."""
        if batch.data or batch.spool_path is None:
            return batch
        return Batch(
            key=batch.key,
            data=Path(batch.spool_path).read_bytes(),
            events=batch.events,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            gzip=batch.gzip,
            spool_path=batch.spool_path,
        )

    @staticmethod
    def remove(batch: Batch) -> None:
        """Delete a delivered batch's spool file."""
        if batch.spool_path is not None:
            Path(batch.spool_path).unlink(missing_ok=True)


def spooled_destinations(root: str | os.PathLike[str]) -> list[tuple[str, dict[str, str]]]:
    """The destinations that have a directory in the spool ``root``, with their options."""
    out = []
    base = Path(root).expanduser()
    if base.is_dir():
        for marker in sorted(base.glob(f"*/{_DESTINATION}")):
            options_file = marker.parent / _OPTIONS
            options = json.loads(options_file.read_text()) if options_file.exists() else {}
            out.append((marker.read_text(), {str(k): str(v) for k, v in options.items()}))
    return out
