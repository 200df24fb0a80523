"""Spans and summaries from events (``_read/_tree.py``), on events built by hand."""

from __future__ import annotations

import itertools
from typing import Any

from asynctrack._read._tree import build_tree, preview, summarize_runs, token_usage, usage_counts

_seq = itertools.count()


def _event(
    kind: str, run_id: str | None, ts: float, parent: str | None = None, **data: Any
) -> dict[str, Any]:
    return {
        "seq": next(_seq),
        "ts": ts,
        "kind": kind,
        "experiment": "e",
        "run": "r",
        "tracker": "t",
        "run_id": run_id,
        "parent_run_id": parent,
        "name": data.pop("name", kind.split("_", maxsplit=1)[0]),
        "duration": data.pop("duration", None),
        "data": data,
        "tags": [],
        "metadata": data.pop("metadata", {}),
    }


def _chat_response(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    message = {
        "content": "hi there",
        "usage_metadata": {"input_tokens": tokens_in, "output_tokens": tokens_out},
    }
    return {"generations": [[{"text": "", "message": message}]], "llm_output": None}


def test_chat_models_retrievers_and_tools_nest_with_their_tokens() -> None:
    events = [
        _event("chain_start", "root", 0.0, name="agent", inputs={"question": "why?"}),
        _event("retriever_start", "ret", 1.0, "root", query="why", name="docs"),
        _event("retriever_end", "ret", 2.0, "root", documents=[{"page_content": "because"}], duration=1.0),
        _event(
            "chat_model_start",
            "chat",
            3.0,
            "root",
            messages=[[{"type": "human", "content": "why?"}]],
            invocation_params={"model": "gpt-x"},
        ),
        _event("llm_new_token", "chat", 3.5, "root", token="hi"),
        _event("llm_end", "chat", 4.0, "root", response=_chat_response(12, 3), duration=1.0),
        _event("tool_start", "tool", 5.0, "root", input_str="2+2", name="calc"),
        _event(
            "tool_error", "tool", 6.0, "root", error={"type": "ValueError", "message": "no"}, duration=1.0
        ),
        _event("chain_end", "root", 7.0, outputs={"answer": "because"}, duration=7.0),
    ]
    (root,) = build_tree(events)
    assert (root.kind, root.name, root.duration, root.status) == ("chain", "agent", 7.0, "ok")
    retriever, chat, tool = root.children
    assert (retriever.kind, retriever.inputs, retriever.outputs) == (
        "retriever",
        "why",
        [{"page_content": "because"}],
    )
    assert (chat.kind, chat.model, chat.tokens_in, chat.tokens_out, chat.streamed_tokens) == (
        "chat_model",
        "gpt-x",
        12,
        3,
        1,
    )
    assert preview(chat.inputs) == "why?"
    assert preview(chat.outputs) == "hi there"
    assert (tool.status, tool.error["message"]) == ("error", "no")
    (summary,) = summarize_runs(events)
    assert (summary.events, summary.errors, summary.llm_calls) == (9, 1, 1)
    assert (summary.tokens_in, summary.tokens_out, summary.duration) == (12, 3, 7.0)


def test_usage_counts_take_openais_names_then_langchains() -> None:
    assert usage_counts({"prompt_tokens": 9, "completion_tokens": 4, "input_tokens": 1}) == (9, 4)
    assert usage_counts({"input_tokens": 7, "output_tokens": 2}) == (7, 2)
    # A zero, a bool or a text is no count: the other name's is taken.
    assert usage_counts({"prompt_tokens": 0, "input_tokens": 3, "completion_tokens": True}) == (3, 0)
    assert usage_counts({"prompt_tokens": "5", "output_tokens": 6}) == (0, 6)
    assert usage_counts({"prompt_tokens": 0, "completion_tokens": None}) is None
    assert usage_counts(None) is None
    assert usage_counts([1, 2]) is None


def test_token_usage_prefers_the_whole_calls_count() -> None:
    both = {
        "response": {
            **_chat_response(1, 1),
            "llm_output": {"token_usage": {"prompt_tokens": 9, "completion_tokens": 4}},
        }
    }
    assert token_usage(both) == (9, 4)
    assert token_usage({"response": {"generations": [], "llm_output": {}}}) is None
    assert token_usage({"response": "not a dict"}) is None


def test_a_lost_start_is_rebuilt_from_the_end() -> None:
    (span,) = build_tree([_event("tool_end", "t", 10.0, output="done", duration=2.5, name="calc")])
    assert (span.kind, span.name, span.start, span.end, span.outputs) == ("tool", "calc", 7.5, 10.0, "done")


def test_an_orphan_is_placed_by_time_only_when_one_root_encloses_it() -> None:
    single = [
        _event("chain_start", "a", 0.0, inputs="x"),
        _event("chain_start", "a-step", 1.0, "a", inputs="y"),
        _event("llm_start", "m", 2.0, "unrecorded", prompts=["p"]),
        _event("llm_end", "m", 3.0, "unrecorded", response={}, duration=1.0),
        _event("chain_end", "a-step", 4.0, "a", outputs="y", duration=3.0),
        _event("chain_end", "a", 5.0, outputs="x", duration=5.0),
    ]
    (root,) = build_tree(single)
    (step,) = root.children
    (model,) = step.children
    assert model.placed_by_time and model.run_id == "m"

    # A second root run overlapping the first (concurrent requests): no guessing.
    overlapping = [
        *single,
        _event("chain_start", "b", 1.5, inputs="z"),
        _event("chain_end", "b", 6.0, outputs="z"),
    ]
    roots = build_tree(overlapping)
    assert sorted(span.run_id for span in roots) == ["a", "b", "m"]
    assert not next(span for span in roots if span.run_id == "m").placed_by_time


def test_an_unfinished_span_and_lone_events_are_kept() -> None:
    events = [
        _event("chain_start", "open", 0.0, inputs="x"),
        _event("agent_action", "open", 1.0, action={"tool": "search", "tool_input": "q"}),
        _event("custom_event", None, 2.0, name="mine", payload=1),
    ]
    open_span, lone = build_tree(events)
    assert (open_span.status, open_span.end, open_span.duration) == ("running", None, None)
    assert [note.kind for note in open_span.notes] == ["agent_action"]
    assert (lone.kind, lone.notes[0].data["payload"]) == ("custom_event", 1)
