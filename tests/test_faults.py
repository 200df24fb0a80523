"""Fault tolerance end to end: a faulty wire, S3 down, the spool, SageMaker faults, concurrency.

Every test talks to the session's moto server on 127.0.0.1, directly or through a
``FaultProxy`` that injects HTTP 500, 503 SlowDown, connection resets, stalls and truncated
responses. What is checked is what a user can check: the objects in S3 (read back with a
boto3 client that goes to moto directly, never through the proxy), ``flush()``'s answer,
``statistics()`` and the spool directory. Each tracker spools into the test's own
``tmp_path`` (``TrackerConfig(spool_dir=...)``), never into ``~/.cache``.

The fault-matrix tests add one row each to a table of recorded / written / duplicated /
spooled / lost events that is printed when the module finishes (``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _infra.aws import FAULT_KINDS, FaultKind, FaultProxy, MotoServer, ProxyRequest
from _infra.aws_fixtures import batch_events, list_keys
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.client import BaseClient
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda
from support import (
    assert_worker_mode,
    closing,
    fail_on_finalizer_complaints,
    finalizer_complaints,
    silent_endpoint,
)

from asynctrack import (
    AsyncTracker,
    FlushError,
    FlushTimeoutError,
    S3Sink,
    SageMakerParameters,
    Statistics,
    TrackerConfig,
)
from asynctrack._cli import main as cli_main

pytest_plugins = ("_infra.aws_fixtures",)

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("aws_env")]

EXPERIMENT = "exp-faults"
JOIN = 60.0  # seconds any thread join or blocking wait may take at most


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    fail_on_finalizer_complaints()


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def join_all(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"threads still running after {JOIN} s: {alive}"


def record_from_threads(tracker: AsyncTracker, total: int, threads: int = 4) -> None:
    """Record ``total`` small events from ``threads`` threads at full speed.

    Even threads call ``on_text``, odd ones ``on_chain_start``; each event carries a
    label ``L<i>`` (``i`` in ``range(total)``) in ``data.text`` or ``data.inputs.label``.
    """
    per = total // threads
    assert per * threads == total
    start = threading.Barrier(threads)
    run_id = uuid.uuid4()

    def body(t: int) -> None:
        start.wait(JOIN)
        if t % 2 == 0:
            on_text = tracker.on_text
            for i in range(t * per, (t + 1) * per):
                on_text(f"L{i}", run_id=run_id)
        else:
            on_chain_start = tracker.on_chain_start
            for i in range(t * per, (t + 1) * per):
                on_chain_start({}, {"label": f"L{i}"}, run_id=run_id)

    workers = [threading.Thread(target=body, args=(t,), name=f"producer-{t}") for t in range(threads)]
    for worker in workers:
        worker.start()
    join_all(workers)


def label(event: dict[str, Any]) -> str:
    data = event["data"]
    return str(data["text"] if event["kind"] == "text" else data["inputs"]["label"])


def record_text(tracker: AsyncTracker, count: int) -> None:
    run_id = uuid.uuid4()
    for i in range(count):
        tracker.on_text(f"L{i}", run_id=run_id)


def s3_events(s3: BaseClient, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every event in every batch object under ``prefix`` (parameters documents skipped)."""
    keys = [key for key in list_keys(s3, bucket, prefix) if "/params/" not in key]
    return [event for key in keys for event in batch_events(s3, bucket, key)]


def assert_exactly_once(events: list[dict[str, Any]], count: int) -> None:
    """The multiset of ``seq`` is exactly ``range(count)``, each with its own label."""
    seqs = collections.Counter(event["seq"] for event in events)
    duplicated = {seq: n for seq, n in seqs.items() if n > 1}
    missing = set(range(count)) - set(seqs)
    assert not duplicated, f"{len(duplicated)} seq(s) written more than once, e.g. {list(duplicated)[:5]}"
    assert not missing, f"{len(missing)} seq(s) missing, e.g. {sorted(missing)[:5]}"
    assert seqs == collections.Counter(range(count))
    labels = collections.Counter(label(event) for event in events)
    assert labels == collections.Counter(f"L{i}" for i in range(count))


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def spooled_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.rglob("*.batch")) if spool_dir.exists() else []


def spooled_event_count(spool_dir: Path) -> int:
    """Events held in the spool (each file is named ``<events>.<hash of its key>.batch``)."""
    return sum(int(path.name.split(".", 1)[0]) for path in spooled_files(spool_dir))


# --------------------------------------------------------------------------------------
# 1. Faults on the wire: 30 % of requests faulted, 10^5 events, every one exactly once
# --------------------------------------------------------------------------------------

FAULT_EVENTS = 100_000
FAULT_RATE = 0.3
SCENARIOS: dict[str, tuple[FaultKind, ...]] = {
    "500": ("500",),
    "503": ("503",),
    "reset": ("reset",),
    "truncate": ("truncate",),
    "stall": ("stall",),
    "mixed": FAULT_KINDS,  # 500, 503, reset, stall, truncate
}
_TABLE_COLUMNS = (
    "scenario",
    "recorded",
    "written",
    "duplicated",
    "spooled",
    "lost",
    "requests",
    "faults",
    "attempts",
    "retries",
    "seconds",
)


@pytest.fixture(scope="module")
def fault_table() -> Iterator[list[dict[str, Any]]]:
    """Rows added by the fault-matrix tests; printed once the module is done."""
    rows: list[dict[str, Any]] = []
    yield rows
    if rows:
        widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in _TABLE_COLUMNS}
        lines = [
            f"\nfault table: {FAULT_EVENTS} events, {FAULT_RATE:.0%} of requests faulted",
            " | ".join(c.ljust(widths[c]) for c in _TABLE_COLUMNS),
            "-+-".join("-" * widths[c] for c in _TABLE_COLUMNS),
        ]
        lines += [" | ".join(str(row[c]).ljust(widths[c]) for c in _TABLE_COLUMNS) for row in rows]
        print("\n".join(lines))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_faulty_wire_every_event_lands_exactly_once(
    scenario: str,
    s3: BaseClient,
    bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
    fault_table: list[dict[str, Any]],
) -> None:
    """30 % of all requests (HeadBucket, every PutObject and its retries, the parameters
    document) get a fault of the scenario's kinds while 10^5 events are recorded from 4
    threads; ``flush()`` returns and S3 holds every event once.

    A stall is given up on by the client after ``read_timeout`` (1 s); the proxy keeps the
    stalled connection silent for 2 s. ``truncate`` and ``stall``-then-retry both re-send a
    PutObject that may already have taken effect: the same key and bytes, so no duplicate.
    """
    proxy.stall_seconds = 2.0
    proxy.set_probability(FAULT_RATE, SCENARIOS[scenario])
    spool_dir = tmp_path / "spool"
    prefix = f"faults-{scenario}"
    sink = S3Sink(
        f"s3://{bucket}/{prefix}",
        endpoint_url=proxy.endpoint_url,
        read_timeout=1.0,
        connect_timeout=2.0,
        write_deadline=90.0,
    )
    tracker = AsyncTracker(
        sink,
        experiment_name=EXPERIMENT,
        run_name=scenario,
        config=TrackerConfig(max_batch_events=2000, max_queue_events=200_000, spool_dir=str(spool_dir)),
    )
    started = time.monotonic()
    with closing(tracker):
        record_from_threads(tracker, FAULT_EVENTS)
        tracker.flush_blocking(timeout=100)
        stats = tracker.statistics()
    seconds = time.monotonic() - started
    faults = proxy.stats
    events = s3_events(s3, bucket, prefix)
    seqs = collections.Counter(event["seq"] for event in events)
    fault_table.append(
        {
            "scenario": f"{scenario} ({'/'.join(SCENARIOS[scenario])})",
            "recorded": stats.recorded,
            "written": len(events),
            "duplicated": len(events) - len(seqs),
            "spooled": stats.spooled,
            "lost": FAULT_EVENTS - len(set(seqs) & set(range(FAULT_EVENTS))),
            "requests": faults.requests,
            "faults": " ".join(f"{k}:{n}" for k, n in faults.faults.items() if n),
            "attempts": sink.attempts,
            "retries": sink.retries,
            "seconds": f"{seconds:.1f}",
        }
    )
    assert faults.total_faults > 0
    assert sink.attempts > sink.retries > 0 or scenario in ("reset", "truncate")  # aiohttp re-sends those
    assert sum(faults.faults[kind] for kind in SCENARIOS[scenario]) == faults.total_faults
    assert_exactly_once(events, FAULT_EVENTS)
    assert (stats.recorded, stats.written, stats.dropped, stats.lost, stats.failed) == (
        FAULT_EVENTS,
        FAULT_EVENTS,
        0,
        0,
        0,
    )
    assert spooled_files(spool_dir) == []


# --------------------------------------------------------------------------------------
# 2. S3 down for the whole run: flush reports, close spools, the spool is delivered once
# --------------------------------------------------------------------------------------

DOWN_EVENTS = 1000
DOWN_BATCH = 300  # 1000 events make 4 batches: 300 + 300 + 300 + 100


def down_tracker(bucket: str, spool_dir: Path, endpoint_url: str, **options: Any) -> AsyncTracker:
    return AsyncTracker(
        f"s3://{bucket}/down",
        experiment_name=EXPERIMENT,
        run_name="down",
        config=TrackerConfig(max_batch_events=DOWN_BATCH, spool_dir=str(spool_dir)),
        endpoint_url=endpoint_url,
        connect_timeout=0.5,
        **options,
    )


@pytest.mark.anyio
async def test_s3_down_flush_times_out_with_the_count_and_close_spools(
    worker_mode: str, moto: MotoServer, s3: BaseClient, bucket: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    tracker = down_tracker(bucket, spool_dir, closed_port_url(), write_deadline=60.0)
    assert_worker_mode(tracker, worker_mode)
    try:
        record_text(tracker, DOWN_EVENTS)
        with anyio.fail_after(JOIN), pytest.raises(FlushTimeoutError) as timed_out:
            await tracker.flush(timeout=1.0)
        assert isinstance(timed_out.value, TimeoutError)
        assert timed_out.value.pending == DOWN_EVENTS
        assert f"{DOWN_EVENTS} event(s) recorded before flush() are not yet" in str(timed_out.value)
        assert tracker.statistics().written == 0
    finally:
        with anyio.fail_after(JOIN), pytest.raises(FlushError) as closed:
            await tracker.aclose(timeout=1.0)
    message = str(closed.value)
    assert "spool" in message
    assert str(spool_dir) in message
    assert f"{DOWN_EVENTS} event(s) were kept" in message
    stats = tracker.statistics()
    assert (stats.written, stats.spooled, stats.lost, stats.failed) == (0, DOWN_EVENTS, 0, 0)
    assert len(spooled_files(spool_dir)) == 4
    assert spooled_event_count(spool_dir) == DOWN_EVENTS
    assert list_keys(s3, bucket) == []

    # A new tracker on the same destination and spool, with S3 up, delivers them once.
    second = down_tracker(bucket, spool_dir, moto.endpoint_url)
    with closing(second):
        second.flush_blocking(timeout=JOIN)
    assert_exactly_once(s3_events(s3, bucket, "down/"), DOWN_EVENTS)
    assert spooled_files(spool_dir) == []


def test_s3_down_past_write_deadline_flush_raises_flush_error_with_the_count(
    worker_mode: str, moto: MotoServer, s3: BaseClient, bucket: str, tmp_path: Path
) -> None:
    """Here every batch exhausts its write deadline before the flush's timeout: the flush
    fails (FlushError, not a timeout) and says how many events and batches failed."""
    spool_dir = tmp_path / "spool"
    tracker = down_tracker(bucket, spool_dir, closed_port_url(), write_deadline=0.5)
    assert_worker_mode(tracker, worker_mode)
    try:
        record_text(tracker, DOWN_EVENTS)
        with pytest.raises(FlushError) as failed:
            tracker.flush_blocking(timeout=JOIN)
        assert not isinstance(failed.value, FlushTimeoutError)
        assert failed.value.pending == DOWN_EVENTS
        assert failed.value.failed_batches == 4
        # (statistics().failed is not checked: it drops to 0 whenever the failed
        # batches are back in flight for their next retry.)
        assert tracker.statistics().written == 0
    finally:
        with pytest.raises(FlushError, match="spool"):
            tracker.close(timeout=JOIN)
    assert tracker.statistics().spooled == DOWN_EVENTS
    assert spooled_event_count(spool_dir) == DOWN_EVENTS
    assert list_keys(s3, bucket) == []


def test_replay_command_delivers_the_spool_exactly_once_and_empties_it(
    moto: MotoServer, s3: BaseClient, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_dir = tmp_path / "spool"
    tracker = down_tracker(bucket, spool_dir, closed_port_url(), write_deadline=60.0)
    record_text(tracker, DOWN_EVENTS)
    with pytest.raises(FlushError, match="spool"):
        tracker.close(timeout=1.0)
    assert spooled_event_count(spool_dir) == DOWN_EVENTS
    capsys.readouterr()

    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 0
    out = capsys.readouterr().out
    assert f"s3://{bucket}/down: delivered 4 batch(es), {DOWN_EVENTS} event(s); 0 still spooled" in out
    assert spooled_files(spool_dir) == []
    keys = list_keys(s3, bucket)
    assert_exactly_once(s3_events(s3, bucket), DOWN_EVENTS)

    # Replaying again sends nothing: no object is added or rewritten.
    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 0
    assert "delivered 0 batch(es), 0 event(s)" in capsys.readouterr().out
    assert list_keys(s3, bucket) == keys
    assert_exactly_once(s3_events(s3, bucket), DOWN_EVENTS)


def test_full_spool_counts_the_batches_as_lost_and_logs_an_error(
    moto: MotoServer, s3: BaseClient, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asynctrack")
    spool_dir = tmp_path / "spool"
    tracker = AsyncTracker(
        f"s3://{bucket}/down",
        experiment_name=EXPERIMENT,
        run_name="tiny-spool",
        config=TrackerConfig(max_batch_events=DOWN_BATCH, spool_dir=str(spool_dir), spool_max_bytes=1),
        endpoint_url=closed_port_url(),
        connect_timeout=0.5,
        write_deadline=60.0,
    )
    record_text(tracker, DOWN_EVENTS)
    with pytest.raises(FlushError) as closed:
        tracker.close(timeout=1.0)
    assert f"0 event(s) were kept in the spool {spool_dir}" in str(closed.value)
    assert f"{DOWN_EVENTS} lost" in str(closed.value)
    stats = tracker.statistics()
    assert (stats.written, stats.spooled, stats.lost) == (0, 0, DOWN_EVENTS)
    assert spooled_files(spool_dir) == []
    errors = [r for r in caplog.records if r.name == "asynctrack" and r.levelno >= logging.ERROR]
    messages = [r.getMessage() for r in errors]
    assert any("spool" in m and "full" in m and "spool_max_bytes=1" in m for m in messages), messages
    assert any(f"closed with {DOWN_EVENTS} event(s) not written" in m for m in messages), messages


def test_close_after_a_timed_out_flush_leaves_no_task_pending_on_the_dead_loop(
    worker_mode: str, moto: MotoServer, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing while writes are still being retried (S3 down, long write deadline) must
    stop the worker cleanly: no task may be left pending on its closed event loop, which
    asyncio reports as "Task was destroyed but it is pending!" (an ERROR log) when the
    tracker is garbage-collected."""
    caplog.set_level(logging.ERROR, logger="asyncio")

    def run() -> Statistics:  # every reference to the tracker goes away with this frame
        tracker = down_tracker(bucket, tmp_path / "spool", closed_port_url(), write_deadline=60.0)
        assert_worker_mode(tracker, worker_mode)
        record_text(tracker, 10)
        with pytest.raises(FlushTimeoutError):
            tracker.flush_blocking(timeout=0.5)
        with pytest.raises(FlushError, match="spool"):
            tracker.close(timeout=0.5)
        return tracker.statistics()

    with finalizer_complaints() as complaints:
        stats = run()
    assert stats.spooled == 10
    destroyed = [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert not destroyed, destroyed
    assert not complaints, complaints[:5]


def test_close_while_the_memory_bound_holds_the_buffer_spools_every_event(
    worker_mode: str, moto: MotoServer, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S3 down and ``max_queue_bytes`` reached: the thread worker leaves records (and the
    close request behind them) in the buffer, which drops (and counts) what is past its
    byte bound; the worker process drops (and counts) what is past the byte bound. Closing
    must still spool every recorded event: the spool has room for all of them, so none may
    be counted as lost."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    spool_dir = tmp_path / "spool"
    recorded = 5000  # ~1.3 MB encoded, ten times the memory bound

    def run() -> tuple[Statistics, str]:  # every reference to the tracker goes away with this frame
        tracker = AsyncTracker(
            f"s3://{bucket}/bound",
            experiment_name=EXPERIMENT,
            run_name="memory-bound",
            config=TrackerConfig(
                max_batch_events=200,
                max_batch_bytes=64 * 1024,
                max_queue_bytes=128 * 1024,
                spool_dir=str(spool_dir),
            ),
            endpoint_url=closed_port_url(),
            connect_timeout=0.5,
            write_deadline=60.0,
        )
        assert_worker_mode(tracker, worker_mode)
        record_text(tracker, recorded)
        with pytest.raises(FlushError) as closed:
            tracker.close(timeout=1.0)
        return tracker.statistics(), str(closed.value)

    with finalizer_complaints() as complaints:
        stats, message = run()
    assert stats.recorded + stats.dropped == recorded, message
    assert (stats.spooled, stats.lost) == (stats.recorded, 0), message
    assert spooled_event_count(spool_dir) == stats.recorded
    destroyed = [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert not destroyed, destroyed[:3]
    assert not complaints, complaints[:5]


def test_a_put_that_never_gets_an_answer_gives_up_at_the_write_deadline(
    worker_mode: str, moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    """An endpoint that accepts connections and never answers (a hung load balancer, a
    black-holed route after connect). Each attempt must end by ``read_timeout`` and the
    batch by ``write_deadline``: the flush then fails by itself, well within its own
    timeout, instead of waiting for ever. (S3 PutObject sends ``Expect: 100-continue``;
    the proxy's "stall" fault answers that itself, so only a silent server shows this.)"""
    read_timeout, write_deadline = 1.0, 2.0
    with silent_endpoint() as endpoint:
        tracker = AsyncTracker(
            f"s3://{bucket}/silent",
            experiment_name=EXPERIMENT,
            run_name="silent",
            config=TrackerConfig(spool_dir=str(tmp_path / "spool")),
            endpoint_url=endpoint,
            connect_timeout=1.0,
            read_timeout=read_timeout,
            write_deadline=write_deadline,
        )
        assert_worker_mode(tracker, worker_mode)
        try:
            record_text(tracker, 10)
            # The flush's own timeout is far beyond the write deadline: only a write that
            # gives up by itself makes it fail with a FlushError rather than time out.
            # (How long that takes is not asserted: that is this machine's speed.)
            with pytest.raises(FlushError) as failed:
                tracker.flush_blocking(timeout=JOIN)
            assert not isinstance(failed.value, FlushTimeoutError), f"the write never gave up: {failed.value}"
            assert failed.value.pending == 10
            assert f"in {write_deadline:g} s" in str(failed.value)
        finally:
            with pytest.raises(FlushError):
                tracker.close(timeout=2.0)


# --------------------------------------------------------------------------------------
# 6. SageMaker behind a faulty proxy: never in the chain's way, reported, then retried
# --------------------------------------------------------------------------------------


def _is_sagemaker(request: ProxyRequest) -> bool:
    return str(request.headers.get("x-amz-target", "")).startswith("SageMaker.")


class HoldSageMaker:
    """A proxy filter that holds the first SageMaker request until released.

    While it holds one, the tracker's parameter write is in flight for as long as the test
    wants: what the chain does meanwhile cannot depend on SageMaker. Only SageMaker
    requests may get faults (S3 requests go to moto directly anyway).
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen = 0
        self._lock = threading.Lock()

    def __call__(self, request: ProxyRequest) -> bool:
        if not _is_sagemaker(request):
            return False
        with self._lock:
            self.seen += 1
        self.entered.set()
        self.release.wait(JOIN)
        return True


def parameters_of(component: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.get("StringValue", value.get("NumberValue"))
        for name, value in component.get("Parameters", {}).items()
    }


def test_sagemaker_faults_never_reach_the_chain_are_reported_then_retried(
    moto: MotoServer,
    s3: BaseClient,
    bucket: str,
    proxy: FaultProxy,
    sagemaker_client: BaseClient,
) -> None:
    hold = HoldSageMaker()
    proxy.set_filter(hold)
    proxy.set_probability(1.0, ["500"])  # SageMaker is down: every call answers 500
    # botocore's own retries off, so that every fault reaches SageMakerParameters' loop.
    session = get_session()
    session.set_default_client_config(AioConfig(retries={"total_max_attempts": 1}))
    tracker = AsyncTracker(
        f"s3://{bucket}/events",
        experiment_name="exp-sm-faults",
        run_name="run-1",
        endpoint_url=moto.endpoint_url,  # events go to S3 directly; SageMaker through the proxy
        # The deadline holds the retries of the 503s and the 500 below on a loaded machine (2.5 s
        # did not, with four test workers on 2 cores at load average 15).
        parameter_sinks=[SageMakerParameters(session=session, endpoint_url=proxy.endpoint_url, deadline=6.0)],
    )
    chain = PromptTemplate.from_template("tell me about {topic}") | FakeListLLM(responses=["an answer"])
    config: Any = {"callbacks": [tracker]}
    outcome: list[BaseException | None] = []

    def flush_in_thread() -> None:
        try:
            tracker.flush_blocking(timeout=JOIN)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with closing(tracker):
        assert chain.invoke({"topic": "first"}, config=config) == "an answer"
        flusher = threading.Thread(target=flush_in_thread, name="flusher")
        flusher.start()
        try:
            # The flush has written the events and is now stuck in a SageMaker call.
            assert hold.entered.wait(JOIN)
            # The chain runs, unaffected, 50 times while that call hangs.
            answers = [chain.invoke({"topic": f"t{i}"}, config=config) for i in range(50)]
            assert answers == ["an answer"] * 50
            assert flusher.is_alive()  # the flush really was still waiting on SageMaker
        finally:
            hold.release.set()
        join_all([flusher])
        (error,) = outcome
        assert isinstance(error, FlushError), error
        assert "SageMakerParameters" in str(error)
        assert error.pending == 0  # the events themselves were written
        stats = tracker.statistics()
        assert stats.parameter_errors >= 1
        assert stats.written >= 6  # the first invoke's events, which that flush covered
        errors_while_down = stats.parameter_errors

        # Faults stop; a short burst of throttling (503 SlowDown) and a 500 remain and
        # are retried within the sink's deadline: the next flush succeeds.
        proxy.clear_faults()
        proxy.schedule(["503", "503", "500"])
        tracker.flush_blocking(timeout=JOIN)
        assert proxy.pending == 0
        assert tracker.statistics().parameter_errors == errors_while_down
        events = 6 * 51  # chain start/end, prompt start/end, llm start/end per invoke
        described = sagemaker_client.describe_trial_component(TrialComponentName="exp-sm-faults-run-1")
        assert parameters_of(described)["events_total"] == events
        assert len(s3_events(s3, bucket)) == events
    assert proxy.stats.faults["500"] >= 2


# --------------------------------------------------------------------------------------
# 7. Concurrency: threads, several event loops, 2000 tasks, concurrent flushes, faults
# --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_threads_loops_and_2000_tasks_with_concurrent_flushes_every_event_once(
    worker_mode: str, s3: BaseClient, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Producers: 4 threads calling ``on_text``, 3 threads each running its own event
    loop with 200 tasks invoking a chain, and 2000 tasks on this loop invoking a chain.
    Flushers meanwhile: 2 threads (``flush_blocking``), a task on every loop
    (``flush()``). 10 % of the S3 requests get a fault. Each thread flush checks that it
    covered every event its producers had recorded before it was called."""
    proxy.set_probability(0.1, ["500", "503", "reset", "truncate"])
    # The seeded draws fault ~1 in the ~40 requests a run makes: a loaded machine's larger
    # batches (fewer requests) could leave it none, so one fault is certain.
    proxy.schedule([None, None, "500"])
    prefix = "concurrency"
    tracker = AsyncTracker(
        f"s3://{bucket}/{prefix}",
        experiment_name=EXPERIMENT,
        run_name="concurrency",
        config=TrackerConfig(max_batch_events=500, batch_interval=0.2, spool_dir=str(tmp_path / "spool")),
        endpoint_url=proxy.endpoint_url,
        read_timeout=5.0,
        write_deadline=60.0,
    )
    assert_worker_mode(tracker, worker_mode)
    config: Any = {"callbacks": [tracker]}

    async def echo(value: str) -> str:
        await asyncio.sleep(0)  # let other tasks interleave between start and end
        return value

    chain = RunnableLambda(echo)
    thread_producers, per_thread = 4, 2500
    loops, tasks_per_loop, main_tasks = 3, 200, 2000
    done = [0] * thread_producers  # events each thread producer has recorded so far
    producing = threading.Event()
    producing.set()
    checked: list[int] = []

    def produce(t: int) -> None:
        run_id = uuid.uuid4()
        for i in range(per_thread):
            tracker.on_text(f"thread{t}-{i}", run_id=run_id)
            done[t] = i + 1

    def other_loop(n: int) -> None:
        async def main() -> None:
            async def flushes() -> None:
                for _ in range(5):
                    await tracker.flush(timeout=JOIN)
                    await asyncio.sleep(0)

            await asyncio.gather(
                flushes(),
                *(chain.ainvoke(f"loop{n}-{i}", config=config) for i in range(tasks_per_loop)),
            )

        asyncio.run(main())

    def thread_flusher(check: bool) -> None:
        while producing.is_set():
            before = list(done)
            tracker.flush_blocking(timeout=JOIN)
            if check and len(checked) < 3:
                texts = {e["data"].get("text") for e in s3_events(s3, bucket, prefix) if e["kind"] == "text"}
                for t, count in enumerate(before):
                    missing = [i for i in range(count) if f"thread{t}-{i}" not in texts]
                    assert not missing, f"flush returned without thread{t}'s events {missing[:5]}"
                checked.append(sum(before))

    failures: list[BaseException] = []

    def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                failures.append(exc)

        return run

    producers = [threading.Thread(target=guarded(produce, t), name=f"producer-{t}") for t in range(4)]
    producers += [threading.Thread(target=guarded(other_loop, n), name=f"loop-{n}") for n in range(loops)]
    flushers = [
        threading.Thread(target=guarded(thread_flusher, check), name=f"flusher-{check}")
        for check in (True, False)
    ]
    for thread in producers + flushers:
        thread.start()
    try:
        with anyio.fail_after(JOIN):

            async def flush_task() -> None:
                for _ in range(10):
                    await tracker.flush(timeout=JOIN)

            async with anyio.create_task_group() as group:
                group.start_soon(flush_task)
                for i in range(main_tasks):
                    group.start_soon(chain.ainvoke, f"task-{i}", config)
        await anyio.to_thread.run_sync(join_all, producers)
    finally:
        producing.clear()
        await anyio.to_thread.run_sync(join_all, flushers)
    assert not failures, failures
    with anyio.fail_after(JOIN):
        await tracker.flush(timeout=JOIN)
    await anyio.to_thread.run_sync(lambda: tracker.close(timeout=30))

    total = thread_producers * per_thread + 2 * (loops * tasks_per_loop + main_tasks)
    events = await anyio.to_thread.run_sync(s3_events, s3, bucket, prefix)
    seqs = collections.Counter(event["seq"] for event in events)
    assert seqs == collections.Counter(range(total))
    texts = collections.Counter(e["data"]["text"] for e in events if e["kind"] == "text")
    assert texts == collections.Counter(f"thread{t}-{i}" for t in range(4) for i in range(per_thread))
    inputs = collections.Counter(e["data"]["inputs"] for e in events if e["kind"] == "chain_start")
    expected = [f"loop{n}-{i}" for n in range(loops) for i in range(tasks_per_loop)]
    expected += [f"task-{i}" for i in range(main_tasks)]
    assert inputs == collections.Counter(expected)
    outputs = collections.Counter(e["data"]["outputs"] for e in events if e["kind"] == "chain_end")
    assert outputs == inputs
    stats = tracker.statistics()
    assert (stats.recorded, stats.written, stats.dropped, stats.lost) == (total, total, 0, 0)
    assert proxy.stats.total_faults > 0
    assert checked, "no checked flush ran while the producers ran"
