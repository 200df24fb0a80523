"""Start of the worker process: take the channel's bytes first, import the rest after.

Run as a file (``python .../_boot.py``), not as ``-m``: that would import the package
first. A reader thread starts draining the channel after nothing but the interpreter's
own start-up, so that what the application ships while the worker imports the engine
(~0.1-0.3 s) is already in this process's memory if the application dies meanwhile.
"""

import os
import sys
import threading

#: Bytes per read: as ``_channel.READ_CHUNK`` (not imported here: nothing is, before the
#: reader starts). Not 1 MiB: ``os.read`` allocates the size asked first, and a buffer
#: that large is mapped and faulted in on every read, which each small frame would pay.
_CHUNK = 1 << 16
_chunks: list[bytes] = []
_ready = threading.Condition()
_state = {"eof": False}


def _slurp() -> None:
    while True:
        try:
            data = os.read(0, _CHUNK)
        except OSError:
            data = b""
        with _ready:
            if data:
                _chunks.append(data)
            else:
                _state["eof"] = True
            _ready.notify_all()
        if not data:
            return


def read() -> bytes:
    """The next bytes from the channel, ``b""`` at end of file."""
    with _ready:
        while not _chunks and not _state["eof"]:
            _ready.wait()
        if _chunks:
            return _chunks.pop(0)
        return b""


threading.Thread(target=_slurp, name="asynctrack-worker-slurp", daemon=True).start()
sys.path[:0] = [p for p in os.environ.get("ASYNCTRACK_PATH", "").split(os.pathsep) if p]

from asynctrack._worker._host import main  # noqa: E402 - after the reader started, on purpose

main(read)
