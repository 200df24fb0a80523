"""The private channel between an application and its worker process: frames on two pipes.

The application writes to the worker's stdin and reads the worker's stdout; both are
anonymous pipes that only the two processes hold (no socket, no port, no file). A
frame is a fixed header and a payload::

    kind (1 byte) | tracker (4 bytes) | number (8 bytes) | payload length (4 bytes) | payload

``tracker`` is the application's id for one tracker (many trackers share one worker
process). ``number`` is the frame's sequence number for ``RECORDS`` (acknowledged by
``ACK``), the request id for ``FLUSH``/``CLOSE`` (answered by ``FLUSHED``/``CLOSED``).

``RECORDS`` payloads are the records' fields as one flat list (``WIDTH`` a record, as
the application's queue holds them) in one ``marshal`` payload (format version 4),
``records_parts`` / ``read_records``: each field crosses as it is, the captured JSON
bodies as bytes (no escaping on one side, no unescaping on the other), a run id's
128-bit int (JSON has no integer that wide), a name or token with a lone surrogate; the
application's shipper writes a frame with one C call, the worker reads it with one (and
makes each record a tuple again, C loops).
Control payloads (``OPEN`` specs, results, statistics, log records) are pickled: both
ends are this package, in processes of the same interpreter, over a pipe nobody else
holds.
"""

from __future__ import annotations

import enum
import marshal
import os
import struct
from collections.abc import Iterator
from typing import Any, Final

from ._events._schema import BODY, WIDTH, Record, records_of

__all__ = [
    "ACK_COUNTS",
    "HEADER",
    "READ_CHUNK",
    "RECORDS",
    "Frame",
    "FrameReader",
    "Kind",
    "encode_frame",
    "read_records",
    "records_count",
    "records_frame",
    "records_parts",
    "write_all",
]

HEADER: Final = struct.Struct("!BIQI")
#: An ACK's payload: the worker's counts of what it wrote (written, batches, bytes).
ACK_COUNTS: Final = struct.Struct("!QQQ")
MAX_PAYLOAD: Final = 2**32 - 1
#: Bytes asked of the pipe per read. Not 1 MiB: ``os.read`` allocates the whole size
#: first, and a buffer that large is mapped, faulted in and shrunk on every read (~18 µs
#: per read of a 2 KB frame against ~2 at 64 KiB, measured), which a trickle of small
#: frames pays each time. A large frame takes a few reads.
READ_CHUNK: Final = 1 << 16
#: Version 4 writes an ASCII string as it is (2 encodes every string to a new bytes object)
#: and an object met twice (an interned event kind) as a reference: per record of the
#: sync workload ~700 instructions to write and ~690 to read, against 890 and 1,030 with
#: version 2 (agent tree: 1,730 and 1,790 against 2,810 and 2,990; callgrind). A reference
#: is only written for an object held elsewhere too: the records' ids and bodies are held
#: by the shipper's take alone (unless a frame is cut from a larger take).
_MARSHAL_VERSION: Final = 4
_MAX_PARTS: Final = 64  # buffers per writev (the system's IOV_MAX is 1024 on Linux)
_LIST: Final = ord("[")  # marshal's type code of a list
_FLAG_REF: Final = 0x80  # marshal's flag on a type code: an object referred to again


class Kind(enum.IntEnum):
    """Frame kinds. Application → worker below 64, worker → application from 64."""

    OPEN = 1  # pickled OpenSpec: build this tracker's engine
    RECORDS = 2  # marshalled flat list of records' fields (records_parts)
    FLUSH = 3  # barrier: answer FLUSHED once everything before it is durable
    CLOSE = 4  # flush, stop and forget this tracker's engine; answer CLOSED
    SEAL = 5  # the lane is held back: seal and write the open batch now (no answer)
    ACK = 64  # every RECORDS frame up to `number` is durable (or resolved otherwise); ACK_COUNTS
    FLUSHED = 65  # pickled Outcome
    CLOSED = 66  # pickled Outcome
    STATS = 67  # pickled worker-side counters of one tracker
    LOG = 68  # pickled (level, message): re-emitted on the application's logger
    OPENED = 69  # pickled None, or the reason the engine could not be built


Frame = tuple[Kind, int, int, bytes]
_KINDS: Final = {kind.value: kind for kind in Kind}  # a look-up: 25 ns, where Kind(n) takes 480
#: ``Kind.RECORDS`` as a module constant: on Python 3.11 an enum member read from its
#: class goes through ``EnumType.__getattr__``'s hook (~230 ns, ~1,500 instructions); a
#: module global is a dict read. The shipper's rounds read it several times each.
RECORDS: Final = Kind.RECORDS


def encode_frame(kind: Kind, tracker: int, number: int, payload: bytes = b"") -> bytes:
    """One frame as bytes (header + payload)."""
    if len(payload) > MAX_PAYLOAD:  # pragma: no cover - the shipper splits long before this
        raise ValueError(f"frame payload of {len(payload)} bytes is too large")
    return HEADER.pack(kind, tracker, number, len(payload)) + payload


def records_parts(tracker: int, number: int, fields: list[Any]) -> tuple[bytes, bytes]:
    """A ``RECORDS`` frame of records given as their ``fields``, flat (plain values,
    ``WIDTH`` a record), as its header and its payload, apart: ``write_all`` writes both
    with one ``writev`` (no copy of the payload behind the header).

    Raises:
        ValueError: a field is a value ``marshal`` does not write (an object, a
            subclass of a builtin type, or nesting deeper than marshal's limit).
    """
    payload = marshal.dumps(fields, _MARSHAL_VERSION)
    if len(payload) > MAX_PAYLOAD:  # pragma: no cover - the shipper cuts frames at 1 MiB
        raise ValueError(f"frame payload of {len(payload)} bytes is too large")
    return HEADER.pack(RECORDS, tracker, number, len(payload)), payload


def records_frame(tracker: int, number: int, records: list[Record]) -> bytes:
    """A whole ``RECORDS`` frame of ``records`` (tuples), as ``records_parts`` joined.

    Raises:
        ValueError: as ``records_parts``.
    """
    header, payload = records_parts(tracker, number, [field for record in records for field in record])
    return header + payload


def read_records(payload: bytes) -> list[Record]:
    """The records of a ``RECORDS`` payload, a tuple each.

    Raises:
        ValueError: the payload is not one ``records_parts`` wrote.
    """
    try:
        fields = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"the records are unreadable ({exc})") from None
    if type(fields) is not list:
        raise ValueError(f"the records are a {type(fields).__name__}, not a list")
    if len(fields) % WIDTH:
        raise ValueError(f"the records are {len(fields)} fields, not whole records of {WIDTH}")
    # C loops (slice, map): no Python runs per record.
    if set(map(type, fields[BODY::WIDTH])) - {bytes}:
        raise ValueError("a record's body is not bytes")
    return records_of(fields)


def records_count(payload: bytes) -> int:
    """How many records a ``RECORDS`` payload holds, without reading them: marshal
    writes a list as ``[`` and its length (4 bytes, little-endian) before the items, here
    ``WIDTH`` fields a record; from version 3 on, the type byte may carry ``FLAG_REF``
    (0x80: the list may be referred to again), as it does for a list the caller still holds.

    Raises:
        ValueError: the payload does not start as a list (``read_records`` would refuse it).
    """
    if len(payload) < 5 or payload[0] & ~_FLAG_REF != _LIST:
        raise ValueError("the records are not a list")
    return int.from_bytes(payload[1:5], "little") // WIDTH


def write_all(fd: int, data: bytes | memoryview | list[bytes]) -> None:
    """Write every byte to ``fd``: bytes, or a list's items in order with one ``writev``
    (a pipe: a write may take less; it releases the GIL)."""
    if isinstance(data, list) and len(data) <= _MAX_PARTS:
        written = os.writev(fd, data)
        if written == sum(map(len, data)):
            return
        rest = memoryview(b"".join(data))[written:]  # a full pipe took part of it
    else:
        whole = b"".join(data) if isinstance(data, list) else data
        written = os.write(fd, whole)  # most writes are whole: no view made
        if written == len(whole):
            return
        rest = memoryview(whole)[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


class FrameReader:
    """Cuts the bytes of a pipe into frames: pushed to it (``feed``), or read from ``fd``
    (``frames()``, which ends at end of file)."""

    def __init__(self, fd: int = -1, chunk: int = READ_CHUNK) -> None:
        self._fd = fd
        self._chunk = chunk
        self._buffer = bytearray()  # the start of a frame whose end has not come yet

    def feed(self, data: bytes) -> list[Frame]:
        """The frames that ``data``, the next bytes of the pipe, completes; ``b""`` is
        the end of file.

        Raises:
            ValueError: a frame of no known kind, or a torn frame at end of file (the
                writer died mid-frame).
        """
        buffer = self._buffer
        if not data:
            if buffer:
                raise ValueError(f"the channel ended inside a frame ({len(buffer)} bytes)")
            return []
        # Most reads hold whole frames only: then they are cut from ``data`` itself.
        if buffer:
            buffer += data
        view: bytes | bytearray = buffer or data
        size, total = HEADER.size, len(view)
        frames: list[Frame] = []
        start = 0
        while total - start >= size:
            kind, tracker, number, length = HEADER.unpack_from(view, start)
            end = start + size + length
            if total < end:
                break
            known = _KINDS.get(kind)
            if known is None:
                raise ValueError(f"a frame of unknown kind {kind}")
            frames.append((known, tracker, number, bytes(view[start + size : end])))
            start = end
        if view is buffer:
            del buffer[:start]
        elif start < total:
            buffer += data[start:]
        return frames

    def frames(self) -> Iterator[Frame]:
        """Yield frames as they arrive; return when the other end is closed.

        Raises:
            OSError: reading failed (other than at end of file).
            ValueError: as ``feed``.
        """
        while True:
            data = os.read(self._fd, self._chunk)  # releases the GIL
            yield from self.feed(data)
            if not data:
                return
