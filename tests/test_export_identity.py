"""Span assembly gives the same bytes for the same lines, release to release.

``golden/export_lines.jsonl.gz`` holds lines recorded once by a tracker (real ChatOpenAI
calls on the loopback stub with a tool round trip and streamed answers, a root chain
with a tool and session metadata, long questions read in parts, text-completion and
chat fakes, a failing chain and a refused model call, a second tracker's envelope),
and ``golden/export_digests.json`` the SHA-256 of the spans, trace and metrics requests that
asynctrack 69c8f17 made of them, in every way the assembler reads lines: content captured
and not, whole and in batches of 7 with evictions, lines of two trackers interleaved, the
same events in another field order (parsed whole), starts and ends missing. A change that
makes any byte of a span differ fails here (decode both with ``opentelemetry-proto`` to
see where).

``python tests/test_export_identity.py record`` records the lines again (then
``digests`` writes the digests of the code at hand: only for a change of the output that
is meant).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from export_workloads import reordered

from asynctrack._export import _metrics
from asynctrack._export import _protobuf as pb
from asynctrack._export._metrics import Metrics
from asynctrack._export._semconv import SCHEMA_URL
from asynctrack._export._spans import SpanAssembler

GOLDEN = Path(__file__).parent / "golden"
LINES = GOLDEN / "export_lines.jsonl.gz"
DIGESTS = GOLDEN / "export_digests.json"
_CLOCK_NS = 1_800_000_000_000_000_000  # the metrics' clock, fixed
_EVICTING = {False: 800, True: 4000}  # max_open_bytes that evicts runs, content not captured and captured


def _lines() -> tuple[list[bytes], list[bytes]]:
    """The two trackers' lines (each in the order its files hold them)."""
    first: list[bytes] = []
    second: list[bytes] = []
    for line in gzip.decompress(LINES.read_bytes()).splitlines():
        (second if b'"experiment":"another-experiment"' in line else first).append(line)
    return first, second


def _interleaved(first: list[bytes], second: list[bytes]) -> list[bytes]:
    """The second tracker's lines between the first's, one in three (each keeps its order)."""
    out: list[bytes] = []
    rest = iter(second)
    for number, line in enumerate(first):
        out.append(line)
        if number % 3 == 2:
            out.extend(itertools.islice(rest, 1))
    out.extend(rest)
    return out


def _gaps(lines: list[bytes]) -> list[bytes]:
    """Every fifth run without its start, every seventh without its end; a line that is
    not JSON and a line without a run id in the middle; every start of one run twice."""
    runs = list(dict.fromkeys(orjson.loads(line)["run_id"] for line in lines))
    no_start, no_end = set(runs[::5]), set(runs[1::7])
    out: list[bytes] = []
    for number, line in enumerate(lines):
        event = orjson.loads(line)
        kind, run_id = event["kind"], event["run_id"]
        if kind.endswith("_start") and run_id in no_start:
            continue
        if kind.endswith(("_end", "_error")) and run_id in no_end:
            continue
        out.append(line)
        if kind.endswith("_start") and run_id == runs[2]:
            out.append(line)
        if number == len(lines) // 2:
            out += [b"not json", b'{"kind": "chain_start"}']
    return out


def _digest(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "little"))
        digest.update(chunk)
    return digest.hexdigest()


def _spans(
    lines: list[bytes], *, capture: bool, batch: int = 0, max_open_bytes: int = 16 << 20
) -> Iterator[bytes]:
    assembler = SpanAssembler(capture_content=capture, max_open_bytes=max_open_bytes)
    for start in range(0, len(lines), batch or len(lines) or 1):
        yield from assembler.add(lines[start : start + (batch or len(lines))])
    yield from assembler.close()
    yield f"{assembler.late_ends} {assembler.bad_lines} {assembler.open_runs}".encode()


def _trace_requests(lines: list[bytes]) -> Iterator[bytes]:
    resource = [pb.attribute("service.name", "golden"), pb.attribute("telemetry.sdk.name", "asynctrack")]
    spans = list(_spans(lines, capture=False))[:-1]
    for start in range(0, len(spans), 7):
        yield pb.request(resource, "asynctrack", "0", spans[start : start + 7], SCHEMA_URL)
    yield pb.request(resource, "asynctrack", "0", [], SCHEMA_URL)


def _metrics_requests(lines: list[bytes], *, backfill: bool) -> Iterator[bytes]:
    metrics = Metrics(
        [pb.attribute("service.name", "golden")], pb.scope("asynctrack", "0"), SCHEMA_URL, backfill=backfill
    )
    metrics.start_ns = _CLOCK_NS - 10**12
    assembler = SpanAssembler(metrics=metrics)
    for start in range(0, len(lines), 16):
        assembler.add(lines[start : start + 16])
        yield metrics.request()
    assembler.close()
    yield metrics.request()


def _cases() -> dict[str, Callable[[], Iterator[bytes]]]:
    first, second = _lines()
    mixed = _interleaved(first, second)
    cases: dict[str, Callable[[], Iterator[bytes]]] = {}
    for capture in (False, True):
        name = "captured" if capture else "not captured"
        cases[f"whole, {name}"] = lambda c=capture: _spans(first, capture=c)
        cases[f"two trackers interleaved, {name}"] = lambda c=capture: _spans(mixed, capture=c)
        cases[f"batches of 7 with evictions, {name}"] = lambda c=capture: _spans(
            mixed, capture=c, batch=7, max_open_bytes=_EVICTING[c]
        )
        cases[f"another field order, {name}"] = lambda c=capture: _spans(reordered(mixed), capture=c)
        cases[f"starts and ends missing, {name}"] = lambda c=capture: _spans(_gaps(mixed), capture=c, batch=5)
    cases["trace requests of 7 spans"] = lambda: _trace_requests(mixed)
    cases["metrics, live"] = lambda: _metrics_requests(mixed, backfill=False)
    cases["metrics, backfill"] = lambda: _metrics_requests(mixed, backfill=True)
    return cases


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_metrics.time, "time_ns", lambda: _CLOCK_NS)


def test_the_golden_lines_cover_what_the_assembler_reads() -> None:
    first, second = _lines()
    kinds = {orjson.loads(line)["kind"] for line in first + second}
    assert kinds >= {
        "chain_start",
        "chain_end",
        "chain_error",
        "chat_model_start",
        "llm_start",
        "llm_new_token",
        "llm_end",
        "llm_error",
        "tool_start",
        "tool_end",
    }
    assert sum(b'"kind":"llm_new_token"' in line for line in second) >= 20
    assert sum(len(line) >= 4096 for line in first) >= 4  # read in parts
    mixed = _interleaved(first, second)
    for capture in (False, True):
        spans = list(_spans(mixed, capture=capture, batch=7, max_open_bytes=_EVICTING[capture]))
        assert sum(b"evicted" in span for span in spans) >= 3
        assert int(spans[-1].split()[0]) >= 1  # late ends


@pytest.mark.usefixtures("fixed_clock")
@pytest.mark.parametrize("case", list(json.loads(DIGESTS.read_text())))
def test_spans_are_the_bytes_of_69c8f17(case: str) -> None:
    expected = json.loads(DIGESTS.read_text())[case]
    assert _digest(_cases()[case]()) == expected


# -- recording (not a test) ----------------------------------------------------------------------


def _record() -> None:  # pragma: no cover - run by hand, see the module docstring
    from _infra.openai_stub import OpenAIStub, run_calls
    from export_workloads import failing_chain, failing_model_call, recorded_lines, weather_agent
    from langchain_core.language_models import FakeListChatModel, FakeListLLM

    from asynctrack import AsyncTracker, TrackerConfig

    long_question = "What is the weather in Paris today? " + "Tell me more about the sky. " * 200
    with tempfile.TemporaryDirectory() as tmp, OpenAIStub() as stub:
        config = TrackerConfig(worker="thread", handle_sigterm=False)
        first = AsyncTracker(Path(tmp) / "a", experiment_name="exp", run_name="r1", config=config)
        run_calls(stub.url, [first], 2, vary=True)
        weather_agent(stub.url, [first], metadata={"session_id": "s-1", "user_id": "u-1"})
        weather_agent(stub.url, [first], question=long_question)
        weather_agent(stub.url, [first], question=long_question + " And tomorrow?")
        FakeListLLM(responses=["a text answer"]).invoke("hi", config={"callbacks": [first]})
        for _ in FakeListChatModel(responses=["streamed"]).stream("hi", config={"callbacks": [first]}):
            pass
        failing_chain([first])
        failing_model_call([first])
        first.close()
        second = AsyncTracker(
            Path(tmp) / "b", experiment_name="another-experiment", run_name=str(uuid.uuid4()), config=config
        )
        run_calls(stub.url, [second], 1, vary=True)
        second.close()
        lines = recorded_lines(Path(tmp) / "a") + recorded_lines(Path(tmp) / "b")
    LINES.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", mtime=0))


def _write_digests() -> None:  # pragma: no cover - run by hand, see the module docstring
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_metrics.time, "time_ns", lambda: _CLOCK_NS)
        digests = {case: _digest(make()) for case, make in _cases().items()}
    DIGESTS.write_text(json.dumps(digests, indent=1) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).parent))
    {"record": _record, "digests": _write_digests}[sys.argv[1]]()
