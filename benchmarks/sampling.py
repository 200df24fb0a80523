"""Sampling: what a trace not sampled costs the application, against the no-op floor.

Sync ``PromptTemplate | FakeListLLM`` calls (6 callback events each), one handler per
measurement, variants in rotating order every repeat, CPU of this thread per event,
figures are medians over repeats of the per-repeat differences (paired):

- ``floor``: a no-op inline ``BaseCallbackHandler`` (every ``on_*`` is ``pass``);
- ``rate0``: ``AsyncTracker`` with ``sample_rate=0.0, sample_keep_errors=False``:
  every trace is decided out at its root, its events skipped;
- ``rate1``: ``AsyncTracker`` at the default rate (everything captured), for scale.

Goal: ``rate0`` within 0.5 µs per event of ``floor``. A second table calls the
callbacks directly (a root chain and a child model call: start, start, end, end), the
same variants, without LangChain's dispatch around them: the difference without the
chain's own noise.

Run: ``python -m benchmarks.sampling [--repeats N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from typing import Any

EVENTS_PER_CALL = 6


def _chain() -> Any:
    from langchain_core.language_models import FakeListLLM
    from langchain_core.prompts import PromptTemplate

    return PromptTemplate.from_template("Say {word}") | FakeListLLM(responses=["ok"])


def _floor() -> Any:
    from langchain_core.callbacks import BaseCallbackHandler

    class Floor(BaseCallbackHandler):
        run_inline = True

    return Floor()


def _measure(chain: Any, handler: Any, calls: int) -> float:
    """CPU seconds of this thread per event for ``calls`` calls with ``handler``."""
    config = {"callbacks": [handler]}
    for _ in range(20):  # warm-up
        chain.invoke({"word": "hi"}, config=config)
    start = time.thread_time()
    for _ in range(calls):
        chain.invoke({"word": "hi"}, config=config)
    return (time.thread_time() - start) / (calls * EVENTS_PER_CALL)


def _direct(handler: Any, pairs: list[tuple[Any, Any]]) -> float:
    """CPU seconds of this thread per callback, called directly (4 per pair)."""
    start = time.thread_time()
    for root, child in pairs:
        handler.on_chain_start({}, {"q": 1}, run_id=root, parent_run_id=None, tags=[], metadata={})
        handler.on_llm_start({}, ["q"], run_id=child, parent_run_id=root, tags=[], metadata={})
        handler.on_llm_end(None, run_id=child, parent_run_id=root)
        handler.on_chain_end({"a": 1}, run_id=root, parent_run_id=None)
    return (time.thread_time() - start) / (4 * len(pairs))


def _table(title: str, per: dict[str, list[float]]) -> None:
    floor = per["floor"]
    print(title)
    print(f"{'variant':<8} {'median':>8} {'minus floor (paired median)':>30}")
    for name, values in per.items():
        deltas = [(v - f) * 1e6 for v, f in zip(values, floor, strict=True)]
        print(f"{name:<8} {statistics.median(values) * 1e6:8.2f} {statistics.median(deltas):30.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args(argv)
    from asynctrack import AsyncTracker, TrackerConfig

    chain = _chain()
    per: dict[str, list[float]] = {"floor": [], "rate0": [], "rate1": []}
    direct: dict[str, list[float]] = {"floor": [], "rate0": []}
    with tempfile.TemporaryDirectory() as tmp:

        def tracker(**config: Any) -> Any:
            return AsyncTracker(tmp, config=TrackerConfig(worker="thread", **config))

        makers = {
            "floor": _floor,
            "rate0": lambda: tracker(sample_rate=0.0, sample_keep_errors=False),
            "rate1": tracker,
        }
        names = list(makers)
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(args.calls * 10)]
            for name in order:
                handler = makers[name]()
                per[name].append(_measure(chain, handler, args.calls))
                if name in direct:
                    direct[name].append(_direct(handler, pairs))
                if name != "floor":
                    handler.close()
    print(f"{args.repeats} repeats x {args.calls} calls x {EVENTS_PER_CALL} events; CPU µs per event")
    _table("sync chain calls", per)
    _table(f"callbacks called directly ({args.calls * 40} per repeat)", direct)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
