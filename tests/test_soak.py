"""Memory stays bounded while S3 hangs and producers run at full speed (issue: memory growth).

The "S3" here is a TCP server on 127.0.0.1 that accepts connections, reads whatever is
sent and never answers: every request, the bucket check included, hangs until the
client's ``read_timeout``. Each batch write is retried for ``write_deadline`` seconds and
then kept as failed; with the memory bound reached, failed batches move to the spool
(itself bounded); when that is full, batches stay in memory, the worker stops taking
records, the buffer fills and new events are dropped and counted.

The run lasts ``ASYNCTRACK_SOAK_SECONDS`` (default 2, what the test command runs; the full soak is
``ASYNCTRACK_SOAK_SECONDS=60 .venv/bin/python -m pytest -m soak``; above ~100 s raise
pytest's per-test timeout too, ``--timeout``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest
from support import finalizer_complaints

from asynctrack import AsyncTracker, FlushError, TrackerConfig

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("ASYNCTRACK_SOAK_SECONDS", "2"))
JOIN = 60.0
MiB = 1024 * 1024

MAX_QUEUE_EVENTS = 10_000
MAX_QUEUE_BYTES = 4 * MiB
#: Room for everything the tracker can hold when it closes (the memory bound, one batch
#: over it, and the buffer's records once encoded, ~300 B each): so nothing may be lost.
SPOOL_MAX_BYTES = 64 * MiB
#: What one raw record (a buffered ``on_text`` call, not yet encoded) can hold: the
#: 8-tuple (120 B), its float and int (56 B), the UUID (~130 B with its int), the
#: captured body (~120 B), allocator slack. Generous on purpose: 2 KiB per record.
RAW_RECORD_BYTES = 2048
#: Fixed overhead allowed on top of the two bounds: aiobotocore/aiohttp client state and
#: connection buffers (a few MB), the encoder's per-batch working copies (the join and,
#: at spill time, the spool write of a 1 MiB batch), thread stacks touched by the
#: producers, the sampler and the executor threads (8 MiB virtual each, mostly untouched),
#: pymalloc arenas kept by CPython after the garbage they held is freed (RSS does not go
#: back down), and measurement noise. Chosen at 150 MB: several times what the run
#: measures (it prints the peak), while a leak of even 1 % of the events recorded at full
#: speed (~100k-300k events/s here, ~500 B each raw) would exceed it within the default
#: 5 s run several times over for an unbounded buffer and, for smaller leaks, in the 60 s run.
FIXED_OVERHEAD = 150 * MiB


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status (VmRSS, in kB)."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts, reads and never answers."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)
        self.connections = 0
        self.received = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(JOIN)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _serve(self) -> None:
        clients: list[socket.socket] = []
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._wake_r:
                            return
                        if key.fileobj is self._listener:
                            with contextlib.suppress(BlockingIOError):
                                client, _ = self._listener.accept()
                                client.setblocking(False)
                                clients.append(client)
                                self.connections += 1
                                selector.register(client, selectors.EVENT_READ)
                            continue
                        client = key.fileobj  # type: ignore[assignment]
                        try:
                            data = client.recv(1 << 16)
                        except OSError:
                            data = b""
                        if data:
                            self.received += len(data)  # read and ignore: never answer
                        else:
                            selector.unregister(client)
                            client.close()
                            clients.remove(client)
            finally:
                for client in clients:
                    client.close()


class RssSampler:
    """Samples VmRSS every 20 ms on a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(JOIN)
            self.peak = max(self.peak, rss_bytes())


def test_memory_stays_bounded_while_s3_hangs(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    producers = 3
    calls = [0] * producers
    stop = threading.Event()

    with finalizer_complaints() as complaints, BlackHole() as s3_hanging:
        tracker = AsyncTracker(
            "s3://soak-bucket/soak",
            experiment_name="soak",
            run_name="hanging-s3",
            config=TrackerConfig(
                max_batch_events=2000,
                max_batch_bytes=1 * MiB,
                max_queue_events=MAX_QUEUE_EVENTS,
                max_queue_bytes=MAX_QUEUE_BYTES,
                spool_dir=str(spool_dir),
                spool_max_bytes=SPOOL_MAX_BYTES,
            ),
            endpoint_url=s3_hanging.endpoint_url,
            read_timeout=1.0,
            connect_timeout=1.0,
            write_deadline=2.0,
        )
        # Warm up (first event encoded and a write attempted: imports, client, pools).
        tracker.on_text("warm-up", run_id=uuid.uuid4())
        with pytest.raises(FlushError):
            tracker.flush_blocking(timeout=0.5)

        def produce(p: int, on_text: Callable[..., None]) -> None:
            run_id = uuid.uuid4()
            n = 0
            while not stop.is_set():
                for _ in range(1000):
                    on_text(f"producer {p} event {n}: some text of a typical length, " * 2, run_id=run_id)
                    n += 1
                calls[p] = n

        sampler = RssSampler()
        threads = [
            threading.Thread(target=produce, args=(p, tracker.on_text), name=f"producer-{p}")
            for p in range(producers)
        ]
        with sampler.running():
            for thread in threads:
                thread.start()
            stop.wait(SOAK_SECONDS)
            stop.set()
            for thread in threads:
                thread.join(JOIN)
            assert not any(thread.is_alive() for thread in threads)
            during = tracker.statistics()
            with pytest.raises(FlushError, match="spool"):
                tracker.close(timeout=1.0)
        stats = tracker.statistics()
        # Work a closed tracker left on its dead loop is found here, in this test.
        del tracker, threads

    total_calls = sum(calls) + 1  # + the warm-up event
    growth = sampler.peak - sampler.baseline
    bound = MAX_QUEUE_BYTES + MAX_QUEUE_EVENTS * RAW_RECORD_BYTES + FIXED_OVERHEAD
    spool_bytes = sum(path.stat().st_size for path in spool_dir.rglob("*.batch"))
    print(
        f"\nsoak {SOAK_SECONDS:g} s: {total_calls} events offered ({total_calls / SOAK_SECONDS:,.0f}/s), "
        f"RSS baseline {sampler.baseline / MiB:.0f} MiB, peak growth {growth / MiB:.1f} MiB "
        f"(bound {bound / MiB:.0f} MiB, {sampler.samples} samples); {stats}; "
        f"spool {spool_bytes / MiB:.1f} MiB; black hole: {s3_hanging.connections} connections",
        file=sys.stderr,
    )
    assert growth < bound, f"RSS grew by {growth / MiB:.1f} MiB, more than {bound / MiB:.0f} MiB"
    # Every offered event is accounted for: recorded or dropped, and every recorded one is
    # written, spooled or lost (S3 never answered, so none is written).
    assert stats.recorded + stats.dropped == total_calls
    assert stats.written == 0
    assert stats.recorded == stats.spooled + stats.lost + stats.filtered
    assert stats.dropped > 0  # the buffer filled up while S3 hung
    assert stats.spooled > 0  # S3 never answered: the spool took what was recorded
    assert spool_bytes <= SPOOL_MAX_BYTES
    # The spool had room for every recorded event: none may be lost at close.
    assert (stats.spooled, stats.lost) == (stats.recorded, 0)
    # Closing left nothing behind on the worker's dead event loop.
    assert not complaints, complaints[:5]
    assert during.pending_bytes <= MAX_QUEUE_BYTES + 1 * MiB  # one batch over, at most
