"""Start of the worker process: take the channel's bytes first, import the rest after.

Run as a file (``python .../_boot.py``), not as ``-m``: that would import the package
first. A reader thread starts draining the channel after nothing but the interpreter's
own start-up, so that what the application ships while the worker imports the engine
(~0.1-0.3 s) is already in this process's memory if the application dies meanwhile.
Once the host is ready (``serve``), the same thread hands every read to it directly:
one thread wakes per read, not a reader and then a consumer.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

#: Bytes per read: as ``_channel.READ_CHUNK`` (not imported here: nothing is, before the
#: reader starts). Not 1 MiB: ``os.read`` allocates the size asked first, and a buffer
#: that large is mapped and faulted in on every read, which each small frame would pay.
_CHUNK = 1 << 16
_lock = threading.Lock()
_early: list[bytes] = []  # what was read before ``serve``; ``b""`` marks end of file
_feed: list[Callable[[bytes], None]] = []  # the host's, once ``serve`` was called


def _read() -> None:
    feed = None
    while True:
        try:
            data = os.read(0, _CHUNK)  # releases the GIL while it waits
        except OSError:
            data = b""
        if feed is None:
            with _lock:
                if not _feed:
                    _early.append(data)
                    if not data:
                        return
                    continue
                feed = _feed[0]
        # Outside the lock: from here on this thread is the only caller of ``feed``.
        feed(data)
        if not data:
            return


def serve(feed: Callable[[bytes], None]) -> None:
    """Give ``feed`` the channel's bytes, in order: at once what was read so far (on this
    thread), then each read on the reader thread as it returns; ``b""`` at end of file.

    ``feed`` must not raise. The reader waits for the lock meanwhile, so ``feed`` never
    runs on two threads at once.
    """
    with _lock:
        for data in _early:
            feed(data)
        _early.clear()
        _feed.append(feed)


threading.Thread(target=_read, name="asynctrack-worker-reader", daemon=True).start()
sys.path[:0] = [p for p in os.environ.get("ASYNCTRACK_PATH", "").split(os.pathsep) if p]

from asynctrack._worker._host import main  # noqa: E402 - after the reader started, on purpose

main(serve)
