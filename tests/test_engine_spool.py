"""The spool (``_pipeline/_spool.py``): long names, trackers that share one spool, and
private modes.

A ``MemorySink`` with ``failing`` set stands for a remote destination that is down:
what it refused is spooled at close; the next tracker on the same destination and
spool directory delivers it. The private-mode tests spool what S3 refused (a closed
port) and replay it with ``asynctrack replay`` against moto on 127.0.0.1.
"""

from __future__ import annotations

import collections
import gzip
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from _infra.aws import MotoServer
from _infra.aws_fixtures import list_keys
from botocore.client import BaseClient
from engine_fakes import JOIN, MemorySink, text

from asynctrack import AsyncTracker, FlushError, TrackerConfig
from asynctrack._cli import main as cli_main
from asynctrack._pipeline._spool import Spool
from asynctrack._sinks._base import Batch

pytest_plugins = ("_infra.aws_fixtures",)

DESTINATION = "memory://spool-test"


def _spool_down(
    spool_dir: Path, experiment: str, run: str, batches: int, per_batch: int, *, gzipped: bool = False
) -> None:
    """A tracker whose destination is down records ``batches * per_batch`` events (``e0``,
    ``e1``, ...), then closes: every batch goes to the spool."""
    sink = MemorySink(DESTINATION)
    sink.failing = True
    tracker = AsyncTracker(
        sink,
        experiment_name=experiment,
        run_name=run,
        config=TrackerConfig(spool_dir=str(spool_dir), max_batch_events=per_batch, gzip=gzipped),
    )
    for i in range(batches * per_batch):
        text(tracker, f"e{i}")
    with pytest.raises(FlushError) as raised:
        tracker.close(timeout=JOIN)
    assert f"at close {batches * per_batch} event(s) were kept" in str(raised.value)
    stats = tracker.statistics()
    assert (stats.spooled, stats.lost, stats.written) == (batches * per_batch, 0, 0)


def test_long_experiment_and_run_names_are_spooled_not_lost(tmp_path: Path) -> None:
    """Names of 100 characters each (a key of ~300 bytes; as base64 in a file name, over the
    255-byte limit): the batches are spooled under short names and delivered later under
    their original keys. (They used to be lost: "File name too long".)"""
    spool_dir = tmp_path / "spool"
    experiment, run = "e" * 100, "r" * 100
    _spool_down(spool_dir, experiment, run, batches=2, per_batch=5)
    files = sorted(spool_dir.rglob("*.batch"))
    assert len(files) == 2
    assert all(len(f.name.encode()) <= 64 for f in files), [f.name for f in files]

    sink = MemorySink(DESTINATION)
    tracker = AsyncTracker(
        sink, experiment_name=experiment, run_name=run, config=TrackerConfig(spool_dir=str(spool_dir))
    )
    try:
        tracker.flush_blocking(timeout=JOIN)
    finally:
        tracker.close(timeout=JOIN)
    assert sorted(b.events for b in sink.batches) == [5, 5]
    assert all(b.key.startswith(f"experiment={experiment}/run={run}/date=") for b in sink.batches)
    assert list(spool_dir.rglob("*.batch")) == []


def test_two_trackers_recovering_one_spool_take_each_batch_once(tmp_path: Path) -> None:
    """Tracker A starts on a spool of three batches while its destination is still down;
    tracker B starts on the same spool with the destination up; then A's destination comes
    back. Each batch is delivered once, by one of them, and both flushes succeed. (Both used
    to take every batch; B delivered and deleted them, and A's flush then failed for ever:
    "No such file or directory".)"""
    spool_dir = tmp_path / "spool"
    _spool_down(spool_dir, "exp", "run", batches=3, per_batch=4)
    config = TrackerConfig(spool_dir=str(spool_dir))

    sink_a = MemorySink(DESTINATION)
    sink_a.failing = True
    tracker_a = AsyncTracker(sink_a, experiment_name="exp", run_name="a", config=config)
    sink_b = MemorySink(DESTINATION)
    tracker_b = AsyncTracker(sink_b, experiment_name="exp", run_name="b", config=config)
    try:
        with pytest.raises(FlushError):
            tracker_a.flush_blocking(timeout=JOIN)
        tracker_b.flush_blocking(timeout=JOIN)
        sink_a.failing = False
        tracker_a.flush_blocking(timeout=JOIN)
        tracker_a.flush_blocking(timeout=JOIN)  # and stays healthy
    finally:
        tracker_a.close(timeout=JOIN)
        tracker_b.close(timeout=JOIN)

    delivered = collections.Counter(b.key for b in [*sink_a.batches, *sink_b.batches])
    assert len(delivered) == 3
    assert set(delivered.values()) == {1}
    assert sum(b.events for b in [*sink_a.batches, *sink_b.batches]) == 12
    assert list(spool_dir.rglob("*.batch")) == []


def test_a_claim_left_by_a_dead_process_is_given_back(tmp_path: Path) -> None:
    """A tracker killed while it held claimed batches leaves them in its claim directory;
    the next claim on the same host gives them back to the spool."""
    spool = Spool(tmp_path / "spool", DESTINATION, max_bytes=1 << 20)
    batch = Batch(
        key="experiment=e/run=r/date=2026-01-01/000000-w-00000000.jsonl",
        data=b"{}\n",
        events=1,
        first_seq=0,
        last_seq=0,
    )
    spool.save(batch)
    dead = spool.directory / f".claim-{spool.claim_directory.name.split('-', 2)[1]}-{_dead_pid()}-0000"
    dead.mkdir()
    (path,) = spool.directory.glob("*.batch")
    os.rename(path, dead / path.name)
    assert spool.pending() == []

    claimed = spool.claim()
    assert [b.key for b in claimed] == [batch.key]
    assert Spool.load(claimed[0]).data == b"{}\n"
    assert not dead.exists()


def _dead_pid() -> int:
    """A pid no process has: a child's, once it has been reaped."""
    child = subprocess.Popen(["true"])
    child.wait(JOIN)
    return child.pid


# -- private modes ----------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are made readable by every local user."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _modes(root: Path) -> dict[str, str]:
    """Every directory and file under ``root`` (``root`` too): its permission bits, octal."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}


def _assert_private(root: Path) -> None:
    modes = _modes(root)
    wrong = {
        path: mode
        for path, mode in modes.items()
        if mode != ("0o700" if (root.parent / path).is_dir() else "0o600")
    }
    assert wrong == {}, modes


def _spool_what_s3_refuses(destination: str, spool_dir: Path, events: int) -> None:
    tracker = AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="private",
        config=TrackerConfig(spool_dir=str(spool_dir), max_batch_events=5),
        endpoint_url=_closed_port_url(),
        connect_timeout=0.5,
    )
    for i in range(events):
        text(tracker, f"private-{i}")
    with pytest.raises(FlushError, match="spool"):
        # Time for a worker process to start, be refused and spool on a loaded machine (with
        # 1 s, 12 events were counted lost at load average 11 with four test workers on 2 cores).
        tracker.close(timeout=5.0)
    assert tracker.statistics().spooled == events


@pytest.mark.aws
@pytest.mark.usefixtures("aws_env", "umask_022")
def test_the_spool_is_private_under_umask_022_and_replay_keeps_it_so(
    moto: MotoServer, s3: BaseClient, tmp_path: Path
) -> None:
    """Spooled by the worker process (the default), with missing parents of the spool
    directory; replayed once against a bucket that does not exist yet (nothing taken),
    claimed and given back, and replayed when the bucket exists (delivered)."""
    cache = tmp_path / "cache"  # does not exist: the spool's parents are made too
    spool_dir = cache / "asynctrack" / "spool"
    bucket = f"private-spool-{os.getpid()}"
    _spool_what_s3_refuses(f"s3://{bucket}/logs", spool_dir, events=12)
    batches = sorted(spool_dir.rglob("*.batch"))
    assert len(batches) == 3
    assert {p.name for p in spool_dir.rglob("*") if p.is_file() and p.suffix != ".batch"} == {
        "destination.txt",
        "options.json",
    }
    _assert_private(cache)

    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 1  # no bucket
    assert sorted(spool_dir.rglob("*.batch")) == batches  # kept
    _assert_private(cache)

    # What replay does with each batch: claim it (into a new claim directory), give it back.
    spool = Spool(spool_dir, f"s3://{bucket}/logs", max_bytes=0)
    claimed = spool.claim()
    assert len(claimed) == 3 and spool.claim_directory.is_dir()
    _assert_private(cache)
    assert all(spool.release(batch) for batch in claimed)
    spool.close()
    assert sorted(spool_dir.rglob("*.batch")) == batches
    _assert_private(cache)

    s3.create_bucket(Bucket=bucket)
    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 0
    assert len(list_keys(s3, bucket)) == 3
    assert list(spool_dir.rglob("*.batch")) == []
    _assert_private(cache)


@pytest.mark.aws
@pytest.mark.usefixtures("aws_env", "umask_022")
def test_a_spool_written_with_looser_modes_is_tightened_by_replay(moto: MotoServer, tmp_path: Path) -> None:
    """A spool left by an earlier version (directories 0755, files 0644): ``replay`` sets
    the destination's directory to 0700 and its files to 0600, even when the destination
    cannot be reached. The spool directory itself may be one the user shares
    (``spool_dir="/tmp"``): left as it is."""
    spool_dir = tmp_path / "spool"
    _spool_what_s3_refuses("s3://no-such-bucket-here/logs", spool_dir, events=6)
    for path in [spool_dir, *spool_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 1  # no bucket
    modes = _modes(spool_dir)
    assert modes.pop("spool") == "0o755"
    _assert_private(next(p for p in spool_dir.iterdir() if p.is_dir()))
    assert len(modes) == 5  # the destination's directory, two batches, two markers


@pytest.mark.usefixtures("umask_022")
def test_the_users_destination_directory_follows_the_umask(tmp_path: Path) -> None:
    """A local destination is the user's to share: 0755 directories, 0644 files under 022."""
    destination = tmp_path / "logs"
    tracker = AsyncTracker(destination, experiment_name="exp", run_name="shared")
    try:
        text(tracker, "shared")
        tracker.flush_blocking(timeout=JOIN)
    finally:
        tracker.close(timeout=JOIN)
    modes = _modes(destination)
    assert len(modes) > 3
    for path, mode in modes.items():
        assert mode == ("0o755" if (tmp_path / path).is_dir() else "0o644"), (path, mode)


def _recover(spool_dir: Path) -> tuple[MemorySink, AsyncTracker]:
    """A tracker on the destination, up again, that delivers the spool, closed."""
    sink = MemorySink(DESTINATION)
    tracker = AsyncTracker(
        sink, experiment_name="exp", run_name="run", config=TrackerConfig(spool_dir=str(spool_dir))
    )
    try:
        tracker.flush_blocking(timeout=JOIN)
    finally:
        tracker.close(timeout=JOIN)
    return sink, tracker


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_spool_file_cut_on_disk_delivers_its_whole_lines_and_counts_the_rest_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, gzipped: bool
) -> None:
    """Four spooled batches of 50 events: one is cut to half its bytes on disk, one
    has bytes changed in the middle of its lines, one in its header's key, one is whole.
    The whole one is delivered as it is; of the damaged ones only whole, valid JSON lines
    are sent, under their own key (none of the one whose key is damaged), the rest is
    counted as lost, and an error names each file. (They were sent as they were, a cut
    line included, the third under a garbled key, and counted written.)"""
    spool_dir = tmp_path / "spool"
    _spool_down(spool_dir, "exp", "run", batches=4, per_batch=50, gzipped=gzipped)
    keys = {batch.key for batch in Spool(spool_dir, DESTINATION, max_bytes=1 << 30).pending()}
    cut, changed, header, whole = sorted(spool_dir.rglob("*.batch"), key=lambda path: path.stat().st_mtime)
    with open(cut, "r+b") as file:
        file.truncate(cut.stat().st_size // 2)
    data = bytearray(changed.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = b"\xff" * 40
    changed.write_bytes(bytes(data))
    data = bytearray(header.read_bytes())
    data[30:40] = b"\xff" * 10  # in the base64 of its key
    header.write_bytes(bytes(data))

    recovered, after = _recover(spool_dir)
    stats = after.statistics()
    lines = [
        line
        for batch in recovered.batches
        for line in (gzip.decompress(batch.data) if gzipped else batch.data).splitlines(keepends=True)
    ]
    assert all(line.endswith(b"\n") and orjson.loads(line)["data"]["text"] for line in lines)
    assert len(lines) == stats.written == sum(b.events for b in recovered.batches)
    assert 50 < stats.written < 150
    assert stats.written + stats.lost == 200
    assert {batch.key for batch in recovered.batches} < keys
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    names = (cut.name, changed.name, header.name)
    assert len(damaged) == 3 and set(names) == {n for m in damaged for n in names if n in m}, damaged
    assert whole.name not in " ".join(damaged)
    assert list(spool_dir.rglob("*.batch")) == []


def test_a_spool_file_whose_name_and_lines_disagree_sends_at_most_its_count_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The digest covers a file's bytes, not the event count in its name: a file renamed
    to say 25 (its bytes intact, 10 lines) sends its 10 and counts 15 lost; one with 5
    whole lines appended sends its own 10 and not the others. ``lost`` never goes
    negative, and the messages say what happened. (The first was trusted: 25 written, 10
    on disk; the second sent 15: "15 of its 10 event(s) ... -5 lost", lost went down.)"""
    spool_dir = tmp_path / "spool"
    _spool_down(spool_dir, "exp", "run", batches=2, per_batch=10)
    renamed, appended = sorted(spool_dir.rglob("*.batch"), key=lambda path: path.stat().st_mtime)
    assert renamed.name.startswith("10.") and appended.name.startswith("10.")
    renamed = renamed.rename(renamed.with_name("25." + renamed.name.partition(".")[2]))
    own = appended.read_bytes().splitlines(keepends=True)
    appended.write_bytes(b"".join(own + own[1:6]))  # after its header: 5 of its lines again

    recovered, after = _recover(spool_dir)
    stats = after.statistics()
    lines = [line for batch in recovered.batches for line in batch.data.splitlines()]
    assert len(lines) == stats.written == 20
    assert sorted(orjson.loads(line)["data"]["text"] for line in lines) == sorted(f"e{i}" for i in range(20))
    assert stats.lost == 15
    damaged = sorted(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
    assert [message.split(": ", 2)[2] for message in damaged] == [
        "10 of its 10 event(s) are whole and sent, 0 lost; 5 more whole line(s), not its own, are not sent",
        "10 of its 25 event(s) are whole and sent, 15 lost",
    ]
    assert list(spool_dir.rglob("*.batch")) == []


def test_a_spool_file_of_the_older_layout_is_delivered_and_checked_by_its_event_count(tmp_path: Path) -> None:
    """Files written by the previous version (header ``asynctrack-spool 1 <key>``, no
    digest) are still delivered whole; one of them cut on disk after a line's end (every
    line it keeps is whole) sends those lines and counts the missing events as lost."""
    spool_dir = tmp_path / "spool"
    _spool_down(spool_dir, "exp", "run", batches=2, per_batch=10)
    files = sorted(spool_dir.rglob("*.batch"))
    for path in files:  # as the previous version wrote them
        header, _, data = path.read_bytes().partition(b"\n")
        assert header.startswith(b"asynctrack-spool 2 ")
        key = header.split(b" ")[2]
        path.write_bytes(b"asynctrack-spool 1 " + key + b"\n" + data)
    header, _, data = files[0].read_bytes().partition(b"\n")
    files[0].write_bytes(header + b"\n" + b"".join(data.splitlines(keepends=True)[:7]))

    recovered, after = _recover(spool_dir)
    stats = after.statistics()
    assert sorted(b.events for b in recovered.batches) == [7, 10]
    assert (stats.written, stats.lost) == (17, 3)
