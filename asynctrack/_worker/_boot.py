"""Start of the worker process: take the channel's bytes first, import the rest after.

Run as a file (``python .../_boot.py``), not as ``-m``: that would import the package
first. A reader thread starts draining the channel after nothing but the interpreter's
own start-up, so that what the application ships while the worker imports the engine
(~0.1-0.3 s) is already in this process's memory if the application dies meanwhile.

Once the host reads (its first ``read()``), the boot reader hands over: it ends after
the read it is in, and the host reads the pipe itself from then on. A frame then wakes
one thread of the worker, not two (the boot reader, then the host it notified); what
the host has not read yet waits in the pipe, which outlives the application.
"""

import os
import sys
import threading

_CHUNK = 1 << 16  # bytes per read: as _channel.READ_CHUNK (not imported here, on purpose)
_chunks: list[bytes] = []
_ready = threading.Condition()
#: eof: the channel ended; host: the host reads (the boot reader ends after its read);
#: slurping: the boot reader runs (while it does, nobody else reads the pipe).
_state = {"eof": False, "host": False, "slurping": True}


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
            done = not data or _state["host"]
            if done:
                _state["slurping"] = False
            _ready.notify_all()
        if done:
            return


def read() -> bytes:
    """The next bytes from the channel, ``b""`` at end of file."""
    with _ready:
        _state["host"] = True
        while not _chunks and _state["slurping"]:
            _ready.wait()
        if _chunks:
            return _chunks.pop(0)
        if _state["eof"]:
            return b""
    try:  # the boot reader has ended: this thread alone reads the pipe, in order
        return os.read(0, _CHUNK)
    except OSError:
        return b""


threading.Thread(target=_slurp, name="asynctrack-worker-slurp", daemon=True).start()
sys.path[:0] = [p for p in os.environ.get("ASYNCTRACK_PATH", "").split(os.pathsep) if p]

from asynctrack._worker._host import main  # noqa: E402 - after the reader started, on purpose

main(read)
