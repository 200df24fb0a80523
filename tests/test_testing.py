"""asynctrack.testing: the in-memory sink works as a tracker's destination."""

from __future__ import annotations

import uuid

import pytest

from asynctrack import AsyncTracker, FlushError, TrackerConfig
from asynctrack.testing import FakeOpenAI, InMemorySink


def test_in_memory_sink_receives_every_event_and_can_fail() -> None:
    sink = InMemorySink()
    with AsyncTracker(sink, experiment_name="e", run_name="r", config=TrackerConfig(spool=False)) as tracker:
        FakeOpenAI(responses=["hello there"], temperature=0.3).invoke("hi", config={"callbacks": [tracker]})
        tracker.flush_blocking(timeout=10)
        kinds = [event["kind"] for event in sink.events()]
        assert kinds == ["llm_start", "llm_end"]
        sink.fail_next = 2  # the next batch and the parameters document
        tracker.on_text("x", run_id=uuid.uuid4())
        with pytest.raises(FlushError):
            tracker.flush_blocking(timeout=10)
        tracker.flush_blocking(timeout=10)  # retried: nothing was discarded
        assert [event["kind"] for event in sink.events()] == ["llm_start", "llm_end", "text"]
    assert sink.closed
    assert any(key.endswith(".json") for key in sink.documents)
