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
    <spool_dir>/<sha256(destination)[:16]>/<events>.<sha256(key)[:32]>.batch
    <spool_dir>/<sha256(destination)[:16]>/.claim-<host>-<pid>-<random>/<same names>

A batch file starts with one header line, ``asynctrack-spool 2 <base64url(key)>
<sha256(batch bytes), hex>``, then the batch's bytes: its name has a fixed length
whatever the experiment and run names (a name made of the key passed the 255-byte
limit of file names once they were ~80 characters long). Files of the older layouts
are still read: ``asynctrack-spool 1 <base64url(key)>`` (no digest), and
``<events>.<base64url(key)>.batch`` with no header.

Files are written whole (write, fsync, rename). The spool is bounded by
``max_bytes``: a batch that does not fit is not spooled and is counted as lost
(newest refused, like the in-memory buffer), with an error logged.

A file may still be cut or damaged on disk afterwards (a full disk, a crash of the
machine, someone else). It is checked when it is loaded for delivery: its header's
key against its name (a digest of the key), its bytes against their digest (in a
file of an older layout: none) and its event count (in its name since the first
layout) against its lines, its last line's end too. A damaged batch is sent as the
whole, valid JSON lines it still holds, at most its event count (a cut line is never
sent, nor lines past its count, and nothing goes under a damaged key); the rest is
counted as lost, and an error names the file (``load``).

A tracker that delivers spooled batches first *claims* them: it renames each file
into its own claim directory, an atomic step only one process can win, so two
trackers recovering one spool never take the same batch. What it has not
delivered by its close goes back to the spool. The claim directory of a process
that died (same host, no such pid) is given back by the next claim.

The spool is private to the user, whatever the umask: every directory it creates
(the spool directory and its missing parents, each destination's directory, claim
directories) is created 0700 and every file (batches, markers, their temporary
files) 0600; the mode is given to ``os.mkdir``/``os.open``, so nothing is ever
readable by others, not even before a ``chmod``. A destination's directory and the
claim directories in it, found with looser modes (a spool written before this
rule), are set to 0700, and the files in them to 0600, when a tracker recovers the
spool or ``asynctrack replay`` runs (a destination's directory also when a batch is
spooled). A spool directory that already exists is left as it is: it may be one the
user shares (``spool_dir="/tmp"``), and it holds only directories named by a hash of
the destination, each private.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import os
import secrets
import socket
import zlib
from pathlib import Path
from typing import Final

import orjson

from .._sinks._base import Batch

__all__ = ["Spool", "spooled_destinations"]

logger = logging.getLogger("asynctrack")

_SUFFIX: Final = ".batch"
_DESTINATION: Final = "destination.txt"
_OPTIONS: Final = "options.json"
_MAGIC: Final = b"asynctrack-spool "
_HEADER: Final = _MAGIC + b"1 "  # the older header: the key only
_HEADER_2: Final = _MAGIC + b"2 "  # the key and the digest of the batch's bytes
_CLAIM: Final = ".claim-"
_DIRECTORY_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


def _private_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 (see the module docstring)."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, _DIRECTORY_MODE)
        except FileExistsError:
            continue  # made meanwhile by another tracker (private too)
        # The umask can only have taken bits away: give the owner's back while it is empty.
        os.chmod(path, _DIRECTORY_MODE)


def _tighten(path: Path, mode: int) -> None:
    """Set ``path`` (one of the spool's own) to ``mode`` if it is looser or lacks bits."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)


def _write_whole(path: Path, data: bytes) -> None:
    _private_directory(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    with open(fd, "wb") as file:
        os.fchmod(fd, _FILE_MODE)  # as for directories: the umask's bits, before any data
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in (socket.gethostname() or "host"))[:32]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def _read_key(path: Path, name: str) -> str | None:
    """The key in a spool file's header line; ``None`` for a file of the oldest layout,
    ``""`` for a damaged header (it does not give the key the file is named after)."""
    with open(path, "rb") as file:
        first = file.readline(8192)
    if not first.startswith(_MAGIC):
        return None
    try:
        if not first.startswith((_HEADER, _HEADER_2)) or not first.endswith(b"\n"):
            raise ValueError("not a header")
        encoded = first[len(_HEADER) : -1].split(b" ", 1)[0]
        key = base64.b64decode(encoded, altchars=b"-_", validate=True).decode()
    except ValueError:
        return ""
    return key if hashlib.sha256(key.encode()).hexdigest()[:32] == name else ""


def _whole_lines(data: bytes, gzipped: bool, most: int) -> tuple[bytes, int, int]:
    """What a damaged batch still holds: its whole lines that are valid JSON objects, the
    first ``most`` of them (as the batch's bytes, gzipped again if it was), how many, and
    how many more there were (lines not its own: a file appended to)."""
    if gzipped:
        # Decompressed as far as it goes: a cut or damaged stream stops there.
        decompressor = zlib.decompressobj(wbits=31)
        pieces = []
        for start in range(0, len(data), 1 << 16):
            try:
                pieces.append(decompressor.decompress(data[start : start + (1 << 16)]))
            except zlib.error:
                break
        text = b"".join(pieces)  # joined once: adding each piece would copy the text each time
    else:
        text = data
    kept: list[bytes] = []
    extra = 0
    for line in text.split(b"\n")[:-1]:  # the last piece has no end of line: cut
        try:
            whole = isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            whole = False
        if whole:
            if len(kept) < most:
                kept.append(line + b"\n")
            else:
                extra += 1
    out = b"".join(kept)
    if gzipped and out:
        out = gzip.compress(out, mtime=0)
    return out, len(kept), extra


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
        self._claim_pid = -1
        self._claim_dir = self.directory

    @property
    def claim_directory(self) -> Path:
        """This process's claim directory (renewed in a forked child)."""
        if self._claim_pid != os.getpid():
            self._claim_pid = os.getpid()
            self._claim_dir = self.directory / f"{_CLAIM}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
        return self._claim_dir

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

    def save(self, batch: Batch, *, claimed: bool = False) -> str | None:
        """Write ``batch`` to the spool; its path, or ``None`` if the spool is full.

        ``claimed=True`` writes it into this process's claim directory: the batch stays
        this tracker's to deliver (memory ran short), no other tracker takes it.
        """
        if self.size() + len(batch.data) > self.max_bytes:
            return None
        marker = self.directory / _DESTINATION
        _tighten(self.directory, _DIRECTORY_MODE)
        if not marker.exists():
            _write_whole(self.directory / _OPTIONS, json.dumps(self.options).encode())
            _write_whole(marker, self.destination.encode())
        name = hashlib.sha256(batch.key.encode()).hexdigest()[:32]
        directory = self.claim_directory if claimed else self.directory
        path = directory / f"{batch.events}.{name}{_SUFFIX}"
        digest = hashlib.sha256(batch.data).hexdigest().encode()
        header = _HEADER_2 + base64.urlsafe_b64encode(batch.key.encode()) + b" " + digest + b"\n"
        _write_whole(path, header + batch.data)
        return str(path)

    def pending(self) -> list[Batch]:
        """The unclaimed spooled batches, data not loaded (``spool_path`` set), oldest first."""
        return self._batches(self.directory)

    def claim(self) -> list[Batch]:
        """Take the unclaimed batches for this process (atomic renames), oldest first.

        A batch another tracker renamed first is not taken. Claim directories left by
        processes of this host that no longer run are given back first.
        """
        self.tighten()
        self._adopt_orphans()
        mine = self.claim_directory
        claimed: list[Batch] = []
        for batch in self.pending():
            assert batch.spool_path is not None
            source = Path(batch.spool_path)
            target = mine / source.name
            _private_directory(mine)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                continue  # another tracker claimed it first
            claimed.append(
                Batch(
                    key=batch.key,
                    data=b"",
                    events=batch.events,
                    first_seq=-1,
                    last_seq=-1,
                    gzip=batch.gzip,
                    spool_path=str(target),
                )
            )
        return claimed

    def release(self, batch: Batch) -> bool:
        """Give a claimed batch back to the spool (undelivered at close); ``False`` if gone."""
        if batch.spool_path is None:
            return False
        path = Path(batch.spool_path)
        if path.parent == self.directory:
            return path.exists()
        try:
            os.rename(path, self.directory / path.name)
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Remove this process's claim directory if nothing is left in it."""
        if self._claim_pid == os.getpid():
            with contextlib.suppress(OSError):
                self._claim_dir.rmdir()

    def tighten(self) -> None:
        """Set this destination's directory and the claim directories in it to 0700, and
        the files in them to 0600, where found looser (a spool written before it was
        private: see the module docstring). One ``stat`` per file: run on recovery and
        replay, not per batch spooled."""
        if not self.directory.is_dir():
            return
        for directory in (self.directory, *self.directory.glob(f"{_CLAIM}*")):
            _tighten(directory, _DIRECTORY_MODE)
            for path in directory.iterdir():
                if not path.is_dir():
                    _tighten(path, _FILE_MODE)

    def _adopt_orphans(self) -> None:
        if not self.directory.is_dir():
            return
        prefix = f"{_CLAIM}{_host()}-"
        for claim_dir in self.directory.glob(f"{prefix}*"):
            try:
                pid = int(claim_dir.name[len(prefix) :].split("-", 1)[0])
            except ValueError:
                continue
            if pid == os.getpid() or _pid_alive(pid):
                continue
            for path in claim_dir.glob(f"*{_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):  # another tracker adopted it
                    os.rename(path, self.directory / path.name)
            with contextlib.suppress(OSError):
                claim_dir.rmdir()

    @staticmethod
    def _batches(directory: Path) -> list[Batch]:
        if not directory.is_dir():
            return []
        found: list[tuple[float, Path]] = []
        for path in directory.glob(f"*{_SUFFIX}"):
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # claimed or delivered meanwhile
                continue
        out: list[Batch] = []
        for _, path in sorted(found):
            events, _, name = path.name[: -len(_SUFFIX)].partition(".")
            try:
                key = _read_key(path, name)
                if key is None:
                    key = base64.urlsafe_b64decode(name).decode()  # the older layout
                count = int(events)
            except FileNotFoundError:
                continue
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
        """``batch`` with its data read from the spool (header removed), checked.

        A file damaged on disk (its digest differs, or it does not hold the event count
        in its name of lines, or its last line is cut) gives the whole, valid JSON lines
        it still holds, at most that count, and their count as ``events`` (never more
        than the batch's): the caller counts the rest as lost. An error names the file.

        Raises:
            FileNotFoundError: the file is gone (delivered by someone else).
        """
        if batch.data or batch.spool_path is None:
            return batch
        path = Path(batch.spool_path)
        data = path.read_bytes()
        header = b""
        if data.startswith((_HEADER, _HEADER_2)):
            end = data.find(b"\n") + 1
            header, data = data[:end], data[end:]
        events = batch.events
        if not batch.key:  # its header is damaged: the key it goes under is unknown
            whole = False
            data = b""
        else:
            # The digest (v2) covers the bytes, not the count in the file's name: both
            # are checked (an older file: its count and its last line's end).
            whole = not header.startswith(_HEADER_2) or (
                hashlib.sha256(data).hexdigest().encode() == header.rstrip(b"\n").rpartition(b" ")[2]
            )
            if whole:
                try:
                    text = gzip.decompress(data) if batch.gzip else data
                except (OSError, EOFError, zlib.error):
                    text = b""
                whole = text.endswith(b"\n") and text.count(b"\n") == events
        if not whole:
            # At most the batch's count is sent: lines past it are not its own.
            data, events, extra = _whole_lines(data, batch.gzip, batch.events)
            more = f"; {extra} more whole line(s), not its own, are not sent" if extra else ""
            logger.error(
                "asynctrack: the spooled batch file %s is damaged (cut or changed on disk): "
                "%d of its %d event(s) are whole and sent, %d lost%s",
                path,
                events,
                batch.events,
                batch.events - events,
                more,
            )
        return Batch(
            key=batch.key,
            data=data,
            events=events,
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
