"""asynctrack.testing: the in-memory sink works as a tracker's destination; the fake models
report the provider of the models they imitate."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _infra.otlp_receiver import OTLPReceiver, attributes

from asynctrack import AsyncTracker, FlushError, OTLPExporter, TrackerConfig
from asynctrack.testing import FakeChatOpenAI, FakeOpenAI, InMemorySink


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


def test_the_fakes_export_the_provider_they_imitate(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """``gen_ai.provider.name`` is ``openai`` (as ``langchain_openai``'s models report it),
    whether LangChain sends its ``ls_*`` params (``invoke``, ``stream``) or not (``generate()``
    without metadata, as an ``LLMChain`` calls it): not ``_fakes``, the fakes' module."""
    exporter = OTLPExporter(receiver.endpoint, metrics=False)
    with AsyncTracker(tmp_path, experiment_name="e", run_name="r", exporters=[exporter]) as tracker:
        config = {"callbacks": [tracker]}
        FakeChatOpenAI(responses=["hi"]).invoke("hello", config=config)
        list(FakeChatOpenAI(responses=["hi there"]).stream("hello", config=config))
        FakeOpenAI(responses=["hi"]).invoke("hello", config=config)
        FakeOpenAI(responses=["a joke"]).generate(["fish"], callbacks=[tracker])  # as LLMChain calls it
    providers = sorted(
        (span.name, attributes(span)["gen_ai.provider.name"])
        for span in receiver.spans
        if "gen_ai.provider.name" in attributes(span)
    )
    assert providers == [
        ("chat gpt-3.5-turbo", "openai"),
        ("chat gpt-3.5-turbo", "openai"),
        ("text_completion gpt-3.5-turbo-instruct", "openai"),
        ("text_completion gpt-3.5-turbo-instruct", "openai"),
    ]
