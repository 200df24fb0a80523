"""``OTLPExporter`` live, from the worker process, against real receivers on 127.0.0.1.

The receiver decodes every request with ``opentelemetry-proto``; it can refuse, stall,
or be stopped. Workloads are real LangChain runs (ChatOpenAI on the loopback stub, a
tool, a failing chain, a LangGraph graph). Every test checks the files too: the export
never costs the files anything.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _infra.mlflow_server import MLflowServer
from _infra.openai_stub import OpenAIStub
from _infra.otlp_receiver import OTLPReceiver, attributes
from export_workloads import SECRET, failing_chain, failing_model_call, recorded_lines, weather_agent
from support import silent_endpoint

from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
from asynctrack._cli import main
from asynctrack._export import _protobuf as pb
from asynctrack._export._exporter import resolve_endpoint, resolve_headers, resource, resource_attributes
from asynctrack._export._semconv import SCHEMA_URL
from asynctrack._export._sender import Sender, without_userinfo
from asynctrack._export._spans import SpanAssembler

WAIT = 30.0
SCRIPT = Path(__file__).parent / "scripts" / "export_app.py"


def _tracker(destination: Path, exporter: OTLPExporter, worker: str = "process") -> AsyncTracker:
    return AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="r1",
        config=TrackerConfig(worker=worker),
        exporters=[exporter],
    )


def _assert_files_complete(tracker: AsyncTracker) -> None:
    stats = tracker.statistics()
    assert (stats.written, stats.dropped, stats.failed, stats.lost) == (stats.recorded, 0, 0, 0)


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_every_run_is_exported_with_the_ids_of_the_files(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, worker: str
) -> None:
    exporter = OTLPExporter(receiver.endpoint, headers={"x-team": "search"})
    tracker = _tracker(tmp_path / "logs", exporter, worker)
    weather_agent(stub.url, [tracker])
    failing_chain([tracker])
    tracker.flush_blocking(timeout=WAIT)
    # flush() returned: the spans of the runs ended before it are at the receiver.
    assert len(receiver.spans) == 5
    assert tracker.statistics().worker_mode == worker
    tracker.close()
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (5, 0)
    _assert_files_complete(tracker)
    headers = receiver.headers[0]
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["x-team"] == "search"
    assert receiver.paths == ["/v1/traces"] * len(receiver.paths)
    resource = attributes(receiver.requests[0].resource_spans[0].resource)
    assert resource["service.name"] == "asynctrack"
    assert resource["telemetry.sdk.name"] == "asynctrack"
    # The files, assembled again (as `asynctrack export` does), give the same spans.
    from_files = SpanAssembler().add(recorded_lines(tmp_path / "logs"))
    assert sorted(span.SerializeToString() for span in receiver.spans) == sorted(from_files)


def test_no_planted_secret_in_any_exported_byte(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub
) -> None:
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, capture_content=True))
    weather_agent(stub.url, [tracker], question=f"echo: my key is {SECRET} and password=hunter2")
    from langchain_core.runnables import RunnableLambda

    def leak(_: str) -> str:
        raise RuntimeError(f"could not connect with api_key={SECRET}")

    try:
        RunnableLambda(leak, name="leaky").invoke("x", config={"callbacks": [tracker]})
    except RuntimeError:
        pass
    tracker.close()
    sent = b"".join(receiver.raw)
    assert b"[REDACTED]" in sent  # content was exported, redacted
    assert SECRET.encode() not in sent
    assert SECRET[8:30].encode() not in sent
    assert b"hunter2" not in sent
    assert tracker.statistics().spans_exported == 5


def test_refusals_are_retried_until_accepted(tmp_path: Path, receiver: OTLPReceiver) -> None:
    receiver.refuse(503, times=2)
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    assert receiver.attempts == 3
    assert len(receiver.spans) == 1
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (1, 0)
    _assert_files_complete(tracker)


def test_retry_after_is_honoured(tmp_path: Path, receiver: OTLPReceiver) -> None:
    receiver.refuse(429, times=1, retry_after="1")
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    assert receiver.attempts == 2
    first, second = receiver.arrival_times
    assert second - first >= 0.95
    assert tracker.statistics().spans_exported == 1


def _cpu_seconds(thread: threading.Thread) -> float:
    """The CPU time ``thread`` has used so far (Linux: /proc, in clock ticks)."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e308"])
def test_a_retry_after_that_is_no_delay_is_bounded_and_counted(receiver: OTLPReceiver, value: str) -> None:
    """A ``Retry-After`` that is no finite, non-negative number of seconds (nan, inf, -5)
    is read as none: the backoff; one past 60 s (1e308) waits 60 s at most. The close's
    deadline bounds either: the span is counted failed and the thread ends, never spinning."""
    receiver.refuse(503, times=1000, retry_after=value)
    sender = OTLPExporter(receiver.endpoint, timeout=5.0, metrics=False).sender(resource())
    sender.put([b""])
    receiver.wait_for_attempts(1, timeout=WAIT)
    thread = sender._thread
    used = _cpu_seconds(thread)
    time.sleep(1.0)
    assert _cpu_seconds(thread) - used < 0.2  # waiting, not spinning
    assert sender.failed == 0  # still retrying (-5 is no "at once")
    began = time.monotonic()
    sender.close(1.0)
    assert time.monotonic() - began < 1.0 + 0.5
    assert not thread.is_alive()
    assert (sender.exported, sender.failed) == (0, 1)


def test_export_against_a_retry_after_nan_ends_and_fails(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination, experiment_name="exp", run_name="r1", config=TrackerConfig(worker="thread")
    )
    failing_chain([tracker])
    tracker.close()
    receiver.refuse(503, times=1000, retry_after="nan")  # the metrics request too
    began = time.monotonic()
    assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--timeout", "1"]) == 1
    assert time.monotonic() - began < 1.0 + 2 * 1.0 + 1.5  # the first try, then 2 x timeout
    printed = capsys.readouterr()
    assert "exported 0 span(s)" in printed.out and ", 1 failed" in printed.out, printed


def test_a_permanent_refusal_is_counted_not_retried(
    tmp_path: Path, receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.refuse(400, times=10)
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint), worker="thread")
    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        failing_chain([tracker])
        failing_chain([tracker])
        tracker.flush_blocking(timeout=WAIT)  # files durable: the flush succeeds
        tracker.close(timeout=WAIT)
    assert receiver.attempts == 1
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 2)
    _assert_files_complete(tracker)
    messages = [r.getMessage() for r in caplog.records if "OTLP export" in r.getMessage()]
    assert len(messages) == 1, messages  # logged once
    assert "HTTP 400" in messages[0]


def test_credentials_in_the_endpoint_are_sent_as_basic_auth_never_printed(
    tmp_path: Path,
    receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``http://user:password@host`` (percent-encoded): an ``Authorization: Basic`` header,
    as the OpenTelemetry exporters send, unless one is given; the URL printed without them."""
    endpoint = receiver.endpoint.replace("http://", "http://bob:urlpass%3A1234@")
    basic = "Basic " + base64.b64encode(b"bob:urlpass:1234").decode()
    destination = tmp_path / "logs"
    receiver.refuse(401, times=1)  # the first answer is logged, with the URL
    tracker = _tracker(destination, OTLPExporter(endpoint), worker="thread")
    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        failing_chain([tracker])
        tracker.close(timeout=WAIT)
    assert [h["Authorization"] for h in receiver.headers] == [basic]
    assert f"{receiver.endpoint}/v1/traces answered HTTP 401" in caplog.text
    # asynctrack export: the same header, the URL printed without the credentials.
    receiver.refuse(401, times=1)
    assert main(["export", str(destination), "--otlp-endpoint", endpoint, "--no-metrics"]) == 1
    assert main(["export", str(destination), "--otlp-endpoint", endpoint, "--no-metrics"]) == 0
    printed = capsys.readouterr()
    assert f"exported 1 span(s) to {receiver.endpoint}/v1/traces" in printed.out
    assert "HTTP 401" in printed.err
    assert [h["Authorization"] for h in receiver.headers] == [basic] * 3
    # An Authorization header given is sent as it is.
    tracker = _tracker(tmp_path / "other", OTLPExporter(endpoint, headers={"authorization": "Bearer t"}))
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    assert receiver.headers[-1]["authorization"] == "Bearer t"  # the case as given
    assert "Authorization" not in receiver.headers[-1]
    for text in (caplog.text, printed.out, printed.err, repr(OTLPExporter(endpoint))):
        assert "urlpass" not in text and "bob" not in text


def test_an_error_answer_echoing_the_credentials_is_shown_redacted(
    tmp_path: Path,
    receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A receiver's error answer is shown (the log, ``flush()``'s result, ``asynctrack export``)
    with the credentials the request carried replaced, in any form they come back (header
    values, the token after ``Basic``, the URL's user and password), and the redaction rules
    applied: what the receiver said is kept."""
    key = "sk-proj-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4e"
    team = "hc9x2TeamKey77"  # no detector knows its format

    def echo(headers: Any) -> bytes:
        basic = headers["Authorization"]
        user_password = base64.b64decode(basic.split()[1]).decode()
        return (
            f"invalid api key {headers['api-key']} / auth {basic} / token {basic.split()[1]} / "
            f"{user_password} / team {headers['x-team']} / password={team}"
        ).encode()

    receiver.refusal_body = echo
    endpoint = receiver.endpoint.replace("http://", "http://bob:hunter2pw@")
    exporter = OTLPExporter(endpoint, headers={"api-key": key, "x-team": team}, metrics=False)
    secrets = (key, team, "hunter2pw", "bob", base64.b64encode(b"bob:hunter2pw").decode())
    shown = f"{receiver.endpoint}/v1/traces answered HTTP 401: invalid api key [REDACTED] / auth [REDACTED]"
    receiver.refuse(401, times=3)
    tracker = _tracker(tmp_path / "logs", exporter, worker="thread")
    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        failing_chain([tracker])
        tracker.close(timeout=WAIT)
    sender = exporter.sender(resource())
    sender.put([b""])
    flushed = sender.flush(WAIT)
    sender.close(WAIT)
    headers = ["--header", f"api-key={key}", "--header", f"x-team={team}"]
    assert (
        main(["export", str(tmp_path / "logs"), "--otlp-endpoint", endpoint, *headers, "--no-metrics"]) == 1
    )
    printed = capsys.readouterr()
    assert receiver.attempts == 3
    for text in (caplog.text, flushed, printed.err):
        assert text is not None and shown in text, text
        assert not any(secret in text for secret in secrets), text
        assert "password=[REDACTED] (not retried)" in text, text


def test_a_huge_error_answer_is_read_up_to_a_bound() -> None:
    """A receiver answering an error with an endless body (a proxy's page, a broken
    gateway): the sender reads 64 KiB of it, shows its start, and drops the connection;
    it neither holds the rest in memory nor waits for it."""
    server = socket.create_server(("127.0.0.1", 0))
    sent: list[int] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            body = head.partition(b"\r\n\r\n")[2]
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1000000000\r\n\r\nno such tenant ")
            piece, total = b"x" * 1048576, 0
            try:
                while total < 1_000_000_000:
                    conn.sendall(piece)
                    total += len(piece)
            except OSError:
                pass
            sent.append(total)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    sender = OTLPExporter(endpoint, timeout=20.0, metrics=False).sender(resource())
    started = time.monotonic()
    sender.put([b""])
    flushed = sender.flush(WAIT)
    sender.close(WAIT)
    thread.join(WAIT)
    server.close()
    assert flushed is not None and "answered HTTP 400: no such tenant xxx" in flushed, flushed
    assert "(not retried)" in flushed
    assert time.monotonic() - started < 10.0
    assert sent and sent[0] < 64 * 1048576, sent  # the rest was never read


def test_an_error_answer_echoing_basic_credentials_decoded_or_json_escaped_is_redacted(
    receiver: OTLPReceiver,
) -> None:
    """An ``Authorization: Basic`` header given (as Grafana Cloud's are): its user and password
    decoded are replaced where the answer echoes them, together or apart; a header value
    echoed as a JSON string escapes it (``\\/``, ``\\"``) is replaced too."""
    user, token = "871234", "glc_eyJvIjoiMTIzIiwibiI6InN0YWNrIn0Tr0ub4dor"
    key, quoted = "Zq8V/nR2mX5tL0wJ7b", 'Qx7"pL9\\mW2vR5tK'
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()

    def echo(headers: Any) -> bytes:
        pair = base64.b64decode(headers["Authorization"].split()[1]).decode()
        answer = {"error": f"invalid credentials {pair}", "token": pair.split(":")[1], "user": user}
        answer |= {"key": headers["x-key"], "other": headers["x-other"]}
        return json.dumps(answer).replace("/", "\\/").encode()

    receiver.refusal_body = echo
    receiver.refuse(401, times=1)
    headers = {"Authorization": f"Basic {basic}", "x-key": key, "x-other": quoted}
    sender = OTLPExporter(receiver.endpoint, headers=headers, metrics=False).sender(resource())
    sender.put([b""])
    flushed = sender.flush(WAIT)
    sender.close(WAIT)
    assert flushed is not None and flushed.endswith(
        'answered HTTP 401: {"error": "invalid credentials [REDACTED]", "token": "[REDACTED]", '
        '"user": "[REDACTED]", "key": "[REDACTED]", "other": "[REDACTED]"} (not retried)'
    ), flushed
    assert receiver.headers[0]["Authorization"] == f"Basic {basic}"


@pytest.mark.parametrize("cut", ["/", "?", "#"])
def test_a_password_that_ends_the_authority_early_is_refused_unprinted(cut: str) -> None:
    """A password with a ``/``, ``?`` or ``#`` not percent-encoded ends the URL's authority
    where ``urlsplit`` reads it (the port then reads ``pa``): the exporter is refused when it
    is made, with a message and a ``repr`` that hold none of the password."""
    endpoint = f"http://bob:pa{cut}ssSECRET@127.0.0.1:4318"
    with pytest.raises(ValueError, match="percent-encoded") as refused:
        OTLPExporter(endpoint)
    assert "SECRET" not in str(refused.value) and "bob" not in str(refused.value)
    assert without_userinfo(endpoint) == "http://…@127.0.0.1:4318"
    assert without_userinfo("http://bob:pw@127.0.0.1:4318/v1") == "http://127.0.0.1:4318/v1"


def _refused_three_ways(
    endpoint: str,
    message: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> list[str]:
    """``endpoint`` refused as the argument, as the environment's ``variable`` and by the CLI,
    each saying ``message`` (the environment's also naming where it came from): every text
    shown, the argument's error first, then the environment's and the CLI's output."""
    with pytest.raises(ValueError, match=message) as refused:
        OTLPExporter(endpoint)
    monkeypatch.setenv(variable, endpoint)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP") as from_environment:
        OTLPExporter()
    monkeypatch.delenv(variable)
    assert main(["export", str(tmp_path), "--otlp-endpoint", endpoint]) != 0
    printed = capsys.readouterr()
    assert message in printed.err
    return [str(refused.value), str(from_environment.value), printed.out, printed.err]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:4318/Tr0ub4dor&3SECRET@collector.example:4318",  # a password's numeric head
        "http://tOkEn/enSECRET@collector.example:4318",  # a token as user name, holding a '/'
        "http://127.0.0.1:4318?pwSECRET@collector.example:4318",
        "http://127.0.0.1:4318#pwSECRET@collector.example:4318",
        "https://bob:pwSECRET@collector.example:4318/v1/tr0ub4dor@collector.example:4318",
    ],
)
def test_an_at_sign_after_the_host_is_refused_unprinted(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A password or token holding an unencoded ``/`` (``?``, ``#``) after a part that reads as
    a host and port leaves an ``@`` after the host: refused (argument, environment, CLI) with a
    message that says to percent-encode it and holds none of it."""
    texts = _refused_three_ways(
        endpoint, "percent-encoded", "OTEL_EXPORTER_OTLP_ENDPOINT", monkeypatch, capsys, tmp_path
    )
    for text in texts:
        assert not any(part in text for part in ("SECRET", "Tr0ub", "tr0ub", "tOkEn", "bob")), text
    encoded = endpoint.replace("/Tr0ub4dor", "%2FTr0ub4dor").replace("tOkEn/en", "tOkEn%2Fen")
    if encoded != endpoint:  # percent-encoded: taken, to the host after the '@'
        shown = repr(OTLPExporter(encoded))
        assert "endpoint='http://collector.example:4318'" in shown and "SECRET" not in shown


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://collector.example:4318?api_key=Zk9QwSECRET",
        "https://collector.example:4318/v1/traces?api_key=Zk9Qw@7Lp3SECRET",
        "https://collector.example:4318/#tokSECRET",
        "https://bob:pwSECRET@collector.example:4318/v1/traces?key=SECRET2",
        "http://collector.example:4318/v1?",
    ],
)
def test_an_endpoint_with_a_query_or_fragment_is_refused_unprinted(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An OTLP endpoint has no query string nor fragment (``/v1/traces`` would be appended to
    it): refused (argument, environment, CLI) with a message that shows the URL without
    them (nor what follows an ``@`` in them)."""
    texts = _refused_three_ways(
        endpoint,
        "has a query string or fragment",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        monkeypatch,
        capsys,
        tmp_path,
    )
    for text in texts:
        assert not any(part in text for part in ("SECRET", "Zk9Qw", "7Lp3", "api_key", "bob")), text
    base = endpoint.partition("?")[0].partition("#")[0].replace("bob:pwSECRET@", "")
    shown = "https://…" if "Zk9Qw@" in endpoint else base  # what follows an '@' there may be secret
    assert f"the OTLP endpoint {shown!r} has a query string" in texts[0]


def test_a_stalled_receiver_bounds_flush_and_close(tmp_path: Path, receiver: OTLPReceiver) -> None:
    receiver.stall()
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=0.5))
    started = time.monotonic()
    for _ in range(3):
        failing_chain([tracker])
    chains = time.monotonic() - started
    began = time.monotonic()
    tracker.flush_blocking(timeout=WAIT)
    flushed = time.monotonic() - began
    began = time.monotonic()
    tracker.close(timeout=1.0)
    closed = time.monotonic() - began
    assert chains < 2.0
    assert flushed < 0.5 + 1.0  # one request timeout, and the marker's own work
    assert closed < 1.0 + 1.5
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 3)
    _assert_files_complete(tracker)


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_a_trickling_receiver_never_makes_close_fail(
    tmp_path: Path, receiver: OTLPReceiver, worker: str
) -> None:
    """Every event is written: a receiver answering one byte a second fails the spans, and
    close(timeout) returns within its timeout without raising."""
    receiver.trickle(1.0)
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=2.0), worker)
    failing_chain([tracker])
    tracker.flush_blocking()
    began = time.monotonic()
    tracker.close(timeout=3.0)  # no FlushTimeoutError
    assert time.monotonic() - began < 3.0 + 0.5
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 1)
    _assert_files_complete(tracker)


def test_a_trickled_answer_is_bounded_by_the_request_timeout(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """Each byte of the answer comes within the socket's timeout: the request still ends
    at its own timeout (and is retried), not when the receiver stops."""
    receiver.trickle(0.2)
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=0.5), "thread")
    failing_chain([tracker])
    tracker.flush_blocking()
    receiver.wait_for_attempts(2, timeout=5.0)  # the first request failed at 0.5 s
    tracker.close(timeout=1.0)
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 1)
    _assert_files_complete(tracker)


def test_an_answer_aborted_at_close_is_a_failure(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """The request in flight at the close's deadline is aborted: the part of a 200 that had
    come is no answer, the span is failed, not exported."""
    receiver.trickle(0.2)
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=10.0), "thread")
    failing_chain([tracker])
    tracker.close(timeout=1.0)
    stats = tracker.statistics()
    assert receiver.attempts == 1
    assert (stats.spans_exported, stats.spans_failed) == (0, 1)
    _assert_files_complete(tracker)


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_a_receiver_that_closes_the_connection_after_its_answer(
    tmp_path: Path, receiver: OTLPReceiver, worker: str
) -> None:
    """A receiver that closes the connection after each answer (``Connection: close``, as
    HTTP/1.0 ones do), its body written after its head: the body is read before the socket
    is closed. A 200 is exported once (not failed and sent again), a 401's text is shown
    and not retried."""
    receiver.closing = True
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=5.0), worker)
    failing_chain([tracker])
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (2, 0)
    assert len(receiver.spans) == 2
    _assert_files_complete(tracker)
    attempts = receiver.attempts  # one or two batches: each sent once
    receiver.refuse(401, times=1)
    receiver.refusal_body = lambda headers: b"the key is not valid for this tenant"
    sender = OTLPExporter(receiver.endpoint, timeout=5.0, metrics=False).sender(resource())
    sender.put([b""])
    flushed = sender.flush(WAIT)
    sender.close(WAIT)
    assert flushed is not None and flushed.endswith(
        "answered HTTP 401: the key is not valid for this tenant (not retried)"
    ), flushed
    assert (sender.exported, sender.failed) == (0, 1)
    assert receiver.attempts == attempts + 1  # not retried


def test_a_dead_receiver_fails_the_spans_not_the_files(tmp_path: Path, receiver: OTLPReceiver) -> None:
    receiver.stop()
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    for _ in range(4):
        failing_chain([tracker])
    began = time.monotonic()
    tracker.flush_blocking(timeout=WAIT)
    assert time.monotonic() - began < 2.0  # one refused connection, not the retries
    began = time.monotonic()
    tracker.close(timeout=1.0)
    assert time.monotonic() - began < 2.5
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 4)
    _assert_files_complete(tracker)


def test_a_backfill_against_a_trickling_receiver_ends_within_its_timeout(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--timeout`` bounds each request (a byte every 0.2 s never makes a whole answer),
    and what is unsent once every span was tried gets 2 x timeout more: about 3 x timeout
    in all, where the default 30 s requests take 90 s."""
    destination = tmp_path / "logs"
    tracker = AsyncTracker(destination, experiment_name="exp", run_name="r1")
    failing_chain([tracker])
    tracker.close()
    receiver.trickle(0.2)
    began = time.monotonic()
    status = main(["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--timeout", "0.5"])
    elapsed = time.monotonic() - began
    assert status == 1
    assert elapsed < 3 * 0.5 + 3.0, elapsed  # 1.8 s at load 13: the files are read meanwhile
    assert receiver.attempts >= 2  # the first request ended at 0.5 s, and was retried
    assert "could not send spans" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "inf"):
        assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--timeout", bad]) == 1
        assert "--timeout takes a positive number of seconds" in capsys.readouterr().err


def test_a_backfill_against_a_silent_receiver_ends_within_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver that accepts and never answers: the spans get one request (``--timeout``),
    then what is unsent, the metrics request included, 2 x timeout more under one deadline
    (not a second budget for the metrics); the error says the request timed out, not what
    the abort made of it (``RemoteDisconnected``)."""
    destination = tmp_path / "logs"
    tracker = AsyncTracker(destination, experiment_name="exp", run_name="r1")
    failing_model_call([tracker])  # a model call: a metrics request follows the spans
    tracker.close()
    timeout = 2.0
    with silent_endpoint() as endpoint, caplog.at_level(logging.WARNING, logger="asynctrack"):
        began = time.monotonic()
        status = main(["export", str(destination), "--otlp-endpoint", endpoint, "--timeout", str(timeout)])
        elapsed = time.monotonic() - began
    assert status == 1
    assert elapsed < 3 * timeout + 2.5, elapsed  # 12.3 s when the metrics had a budget of their own
    printed = capsys.readouterr()
    assert "exported 0 span(s)" in printed.out and "1 failed" in printed.out
    (last,) = printed.err.splitlines()
    assert "could not send spans" in last and "timed out" in last, last
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "could not send metrics requests" in logged
    assert "RemoteDisconnected" not in logged + printed.err


def test_a_timeout_beyond_its_bound_is_refused(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--timeout`` above 1e6 s (one that overflows a thread's wait: 1e10, 1e300) is refused
    with a message, no traceback; 1e6 itself exports."""
    destination = tmp_path / "logs"
    tracker = AsyncTracker(destination, experiment_name="exp", run_name="r1")
    failing_chain([tracker])
    tracker.close()
    command = ["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--no-metrics"]
    for bad in ("1000001", "1e10", "1e300"):
        assert main([*command, "--timeout", bad]) == 1
        printed = capsys.readouterr()
        assert "--timeout takes a positive number of seconds, at most 1e+06, got" in printed.err
        assert "Traceback" not in printed.err
    assert receiver.attempts == 0
    assert main([*command, "--timeout", "1e6"]) == 0
    assert "exported 1 span(s)" in capsys.readouterr().out


def test_a_full_export_queue_drops_spans_and_counts_them(tmp_path: Path, receiver: OTLPReceiver) -> None:
    receiver.stall()
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, max_queue_bytes=600, timeout=0.5))
    for _ in range(20):
        failing_chain([tracker])
    tracker.close(timeout=1.0)
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (0, 20)
    _assert_files_complete(tracker)


def test_a_put_past_the_queue_bound_takes_the_spans_that_fit(receiver: OTLPReceiver) -> None:
    # The spans that fit are queued in order; from the first that does not, the rest are
    # dropped and counted at once (each put on a sender of its own: nothing sent between).
    receiver.stall()
    exporter = OTLPExporter(receiver.endpoint, max_queue_bytes=250, timeout=0.5)
    for spans, failed in (
        ([b"a" * 100, b"b" * 150], 0),  # exactly the bound
        ([b"a" * 100, b"b" * 100, b"c" * 60, b"d" * 5], 2),  # c does not fit, nor d after it
    ):
        sender = exporter.sender([])
        try:
            sender.put(spans)
            assert sender.failed == failed
        finally:
            sender.close(timeout=0.0)


def test_a_langgraph_graph_is_one_trace(tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub) -> None:
    from _infra.openai_stub import chat_model
    from langchain_core.messages import HumanMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    llm = chat_model(stub.url)

    def model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    app = graph.compile()
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    app.invoke({"messages": [HumanMessage("What is the weather in Paris?")]}, config={"callbacks": [tracker]})
    tracker.close(timeout=WAIT)
    spans = receiver.spans
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [s.name for s in roots] == ["invoke_workflow LangGraph"]
    assert all(s.parent_span_id in by_id for s in spans if s.parent_span_id)
    chat = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(chat) == 1
    # chat -> the node "model" -> the graph
    node = by_id[chat[0].parent_span_id]
    assert node.name == "model"
    assert by_id[node.parent_span_id] is roots[0]
    assert len(spans) == tracker.statistics().spans_exported


def test_a_resumed_graph_links_to_the_run_it_paused_in(tmp_path: Path, receiver: OTLPReceiver) -> None:
    from _infra.graphs import QUESTION, interrupt_and_resume

    destination = tmp_path / "logs"
    tracker = _tracker(destination, OTLPExporter(receiver.endpoint))
    interrupt_and_resume([tracker], answer="approved")
    tracker.close(timeout=WAIT)
    _assert_files_complete(tracker)
    spans = receiver.spans
    graphs = sorted((s for s in spans if not s.parent_span_id), key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in graphs] == ["invoke_workflow LangGraph"] * 2
    paused, resumed = graphs
    assert paused.trace_id != resumed.trace_id  # a resume is a new root run
    (interrupt,) = [e for e in paused.events if e.name == "langchain.graph_interrupt"]
    (resume,) = [e for e in resumed.events if e.name == "langchain.graph_resume"]
    found = attributes(interrupt)
    checkpoint = found["langgraph.checkpoint.id"]
    assert found["langgraph.status"] == "pending"
    assert found["langgraph.interrupt.count"] == 1
    assert len(found["langgraph.interrupt.ids"]) == 1
    assert attributes(resume)["langgraph.checkpoint.id"] == checkpoint
    assert not paused.links
    (link,) = resumed.links
    assert (link.trace_id, link.span_id) == (paused.trace_id, paused.span_id)
    assert attributes(link) == {"langgraph.link": "resumed_from"}
    # The node that paused is no error span (no alert for a graph waiting on a human).
    (node,) = [s for s in spans if s.name == "ask" and s.trace_id == paused.trace_id]
    assert node.status.code == 0  # unset
    assert attributes(node)["langgraph.interrupted"] is True
    assert "error.type" not in attributes(node)
    assert not node.events
    # What interrupt() was given is content: not exported without capture_content.
    assert not any(QUESTION["question"].encode() in s.SerializeToString() for s in spans)
    # A backfill of the files makes the same link (the same spans, byte for byte).
    with OTLPReceiver() as second:
        assert main(["export", str(destination), "--otlp-endpoint", second.endpoint, "--no-metrics"]) == 0
        again = sorted(s.SerializeToString() for s in second.spans)
    assert again == sorted(s.SerializeToString() for s in spans)


def test_the_worker_exports_ended_runs_after_the_application_is_killed(
    tmp_path: Path, receiver: OTLPReceiver
) -> None:
    env = {**os.environ, "ASYNCTRACK_EXIT_TIMEOUT": "10", "ASYNCTRACK_WORKER": "process"}
    env.pop("PYTHONWARNINGS", None)
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path / "logs"), receiver.endpoint, "50"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready.strip() == b"ready", ready
        time.sleep(0.1)  # the guarantee under test: recorded >= 50 ms before the kill
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
        spans = receiver.wait_for_spans(51, timeout=WAIT)  # 50 ended runs and one never ended
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    ended = [s for s in spans if "asynctrack.unfinished" not in attributes(s)]
    unfinished = [s for s in spans if "asynctrack.unfinished" in attributes(s)]
    assert len(ended) == 50
    assert [attributes(s)["asynctrack.unfinished"] for s in unfinished] == ["not_ended"]


def test_settings_are_checked_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="timeout"):
        OTLPExporter("http://127.0.0.1:4318", timeout=0)
    with pytest.raises(ValueError, match="headers"):
        OTLPExporter("http://127.0.0.1:4318", headers={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="http"):
        OTLPExporter("grpc://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP"):
        OTLPExporter()
    with pytest.raises(ValueError, match="exporters"):
        AsyncTracker("/tmp/x", exporters=["http://127.0.0.1:4318"])  # type: ignore[list-item]


@pytest.mark.parametrize("timeout", [1e6 + 1, 1e10, math.inf, math.nan, -1.0, True])
def test_a_timeout_past_its_bound_is_refused_at_construction(timeout: float) -> None:
    """The exporter's ``timeout`` has the CLI's bound (1e6 s): beyond it a close's wait
    (twice it) would overflow a thread's wait in the worker."""
    with pytest.raises(ValueError, match=r"timeout must be a positive number of seconds, at most 1e\+06"):
        OTLPExporter("http://127.0.0.1:4318", timeout=timeout)
    assert OTLPExporter("http://127.0.0.1:4318", timeout=1e6).timeout == 1e6


def test_a_bad_metrics_endpoint_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is refused when the exporter is made,
    not when the worker starts it (where it left the spans unsent too); unused without
    metrics, or with an endpoint given (its ``/v1/metrics`` is used)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://collector/v1/metrics")
    with pytest.raises(ValueError, match=r"http:// or https://.*from the OTEL_EXPORTER_OTLP_\* environment"):
        OTLPExporter()
    for taken in (OTLPExporter(metrics=False), OTLPExporter("http://127.0.0.1:4318")):
        taken.start().close(0.1)


def test_the_otel_environment_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%20def,x-tenant=7",
        "OTEL_SERVICE_NAME": "agents",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=ignored",
    }
    assert resolve_endpoint(None, env) == "https://collector:4318/v1/traces"
    assert (
        resolve_endpoint(None, {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"})
        == "http://t:1/x"
    )
    assert resolve_endpoint("http://h:4318", env) == "http://h:4318/v1/traces"
    assert resolve_endpoint("http://h:4318/v1/traces", env) == "http://h:4318/v1/traces"
    assert resolve_endpoint(None, {}) == "http://localhost:4318/v1/traces"
    assert resolve_headers({"x-tenant": "8"}, env) == {"api-key": "abc def", "x-tenant": "8"}
    own = {**env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "t=1", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "m=2"}
    assert resolve_headers(None, own) == {"api-key": "abc def", "x-tenant": "7", "t": "1"}
    assert resolve_headers(None, own, "metrics") == {"api-key": "abc def", "x-tenant": "7", "m": "2"}
    resource = resource_attributes(env)
    assert (resource["service.name"], resource["deployment.environment"]) == ("agents", "prod")
    assert "service.instance.id" not in resource
    assert resource_attributes(env, "id-1")["service.instance.id"] == "id-1"
    own_id = {**env, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-7"}
    assert resource_attributes(own_id, "id-1")["service.instance.id"] == "pod-7"


def test_the_environment_reaches_the_worker_process(
    tmp_path: Path, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-app")
    tracker = _tracker(tmp_path / "logs", OTLPExporter())
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    assert tracker.statistics().worker_mode == "process"
    assert attributes(receiver.requests[0].resource_spans[0].resource)["service.name"] == "from-the-app"


def test_backfill_sends_the_same_spans_as_the_live_export(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = _tracker(destination, OTLPExporter(receiver.endpoint))
    weather_agent(stub.url, [tracker])
    failing_chain([tracker])
    tracker.on_chain_start({}, {"q": 1}, run_id=uuid.uuid4(), name="never_ends")
    tracker.close(timeout=WAIT)
    live = sorted(span.SerializeToString() for span in receiver.spans)
    assert len(live) == 6
    with OTLPReceiver() as second:
        status = main(["export", str(destination), "--otlp-endpoint", second.endpoint, "--header", "x-k=v"])
        assert status == 0
        assert sorted(span.SerializeToString() for span in second.spans) == live
        assert second.headers[0]["x-k"] == "v"
        assert capsys.readouterr().out.splitlines() == [
            f"exported 6 span(s) to {second.endpoint}/v1/traces",
            f"exported 4 metric point(s) to {second.endpoint}/v1/metrics",
        ]
        # One run only.
        status = main(["export", str(destination), "--otlp-endpoint", second.endpoint, "--run", "nope"])
        assert status == 1
        assert "nope" in capsys.readouterr().err


def test_backfill_reads_the_names_asked_and_skips_an_unreadable_line(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--experiment``/``--run`` keep the events whose own fields are those names, as the
    other readers: ``Run`` and ``run`` share one directory on a case-insensitive file system
    (simulated: the files moved into one). A line that is not an event (a file cut short)
    is skipped, and its file named once with the count; the rest is exported."""
    destination = tmp_path / "logs"
    for run in ("run", "Run"):
        tracker = AsyncTracker(destination, experiment_name="e", run_name=run)
        failing_chain([tracker])
        tracker.close()
    shared = destination / "experiment=e" / "run=run"
    for path in list(destination.glob("experiment=e/run=Run/*/*")):
        (shared / path.parent.name).mkdir(exist_ok=True)
        path.rename(shared / path.parent.name / path.name)
    batch = next(shared.glob("date=*/*.jsonl"))
    with batch.open("ab") as file:
        file.write(b'{"kind": "chain_end", "da\n')
    command = ["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--no-metrics"]
    assert main([*command, "--experiment", "e", "--run", "run"]) == 0
    assert [attributes(span)["asynctrack.run"] for span in receiver.spans] == ["run"]
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"exported 1 span(s) to {receiver.endpoint}/v1/traces"]
    assert err.splitlines() == [
        f"asynctrack export: skipped 1 unreadable line(s) in {batch.name} under {destination}"
    ]
    assert main([*command, "--experiment", "e"]) == 0  # both runs
    assert sorted(attributes(span)["asynctrack.run"] for span in receiver.spans) == ["Run", "run", "run"]


def test_the_demo_agent_is_one_trace_its_model_calls_under_it(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed notebook's agent (scenario 3): the tracker is given to the AgentExecutor and
    to the models, not to the LLMChain between them, so each model call's parent is a run
    never recorded. Each goes in the agent's trace, under its innermost open run (the
    agent, or the Calculator tool running the math chain), marked; no parent is dangling.
    The backfill from the files places them the same way."""
    from asynctrack._demo._scenarios import scenario_3_agent

    destination = tmp_path / "logs"
    tracker = _tracker(destination, OTLPExporter(receiver.endpoint))
    scenario_3_agent([tracker])
    tracker.close(timeout=WAIT)
    spans = receiver.spans
    assert len(spans) == 7 == tracker.statistics().spans_exported
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if not s.parent_span_id]
    assert all(s.parent_span_id in by_id for s in spans if s.parent_span_id)  # none dangling
    starts = {
        e["run_id"]: e for e in map(json.loads, recorded_lines(destination)) if e["kind"].endswith("_start")
    }
    placed = [s for s in spans if "asynctrack.parent_inferred" in attributes(s)]
    assert len(placed) == 4
    homes = []
    for span in placed:
        run = attributes(span)["langchain.run_id"]
        assert attributes(span)["asynctrack.parent_inferred"] == starts[run]["parent_run_id"]
        assert starts[run]["parent_run_id"] not in starts  # its parent was never recorded
        homes.append(by_id[span.parent_span_id].name)
    assert homes.count(root.name) == 3  # the agent's own model calls
    assert len(set(homes) - {root.name}) == 1  # the math chain's, under the tool running it
    live = sorted(span.SerializeToString() for span in spans)
    with OTLPReceiver() as second:
        assert main(["export", str(destination), "--otlp-endpoint", second.endpoint, "--no-metrics"]) == 0
        assert sorted(span.SerializeToString() for span in second.spans) == live
    capsys.readouterr()


def test_backfill_reports_a_receiver_that_refuses(
    tmp_path: Path, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(destination, experiment_name="exp", run_name="r1")
    failing_chain([tracker])
    tracker.close()
    receiver.refuse(401, times=1)
    assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["export", str(destination), "--header", "no-equals-sign"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


_UNCARRIED = ("Bearer abc\r\nX-Injected: 1", "Bearer tökén…", "Bearer abc\x00def")


@pytest.mark.parametrize("value", _UNCARRIED)
def test_a_header_http_cannot_carry_is_refused_unprinted(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header value (or name) HTTP cannot carry (CR/LF, NUL, past latin-1) is a
    ``ValueError`` where it enters: ``headers=``, the OTel variables, ``--header``; the value
    is never printed. A tab and latin-1 text are carried."""
    with pytest.raises(ValueError, match="'Authorization' holds a character HTTP cannot carry") as refused:
        OTLPExporter("http://127.0.0.1:4318", headers={"Authorization": value})
    assert "abc" not in str(refused.value) and "tök" not in str(refused.value)
    with pytest.raises(ValueError, match="a header name is not an HTTP token") as refused:
        OTLPExporter("http://127.0.0.1:4318", headers={"Authorization: Bearer abc": "x"})
    assert "abc" not in str(refused.value)
    OTLPExporter("http://127.0.0.1:4318", headers={"x-tenant": "caf\xe9\tdu coin"})
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"):
        with monkeypatch.context() as env:
            env.setenv(variable, "Authorization=" + urllib.parse.quote(value))
            with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_HEADERS.*cannot carry") as refused:
                OTLPExporter("http://127.0.0.1:4318")
            assert "abc" not in str(refused.value) and "tök" not in str(refused.value)
    destination = tmp_path / "logs"
    with OTLPReceiver() as receiver:
        command = ["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--header"]
        assert main([*command, f"Authorization={value}"]) == 1
        assert main([*command, "Authorization: Bearer abc"]) == 1
        printed = capsys.readouterr()
        assert printed.out == "" and len(printed.err.splitlines()) == 2, printed
        assert "--header: the value of header 'Authorization' holds a character HTTP" in printed.err
        assert "abc" not in printed.err and "tök" not in printed.err and "Traceback" not in printed.err
        assert receiver.attempts == 0


_RESERVED = (
    "Content-Type",
    "content-encoding",
    "CONTENT-LENGTH",
    "Transfer-Encoding",
    "host",
    "Accept-Encoding",
)


@pytest.mark.parametrize("name", _RESERVED)
def test_a_header_the_request_sets_itself_is_refused(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header the request's framing sets (the sender's Content-Type and Content-Encoding,
    http.client's Content-Length, Host...), in any case, is a ``ValueError`` where it enters."""
    with pytest.raises(ValueError, match=f"header {name!r} is set by the exporter itself"):
        OTLPExporter("http://127.0.0.1:4318", headers={name: "3"})
    with monkeypatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"{name}=3")
        with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_HEADERS.*set by the exporter itself"):
            OTLPExporter("http://127.0.0.1:4318")
    with OTLPReceiver() as receiver:
        command = ["export", str(tmp_path / "logs"), "--otlp-endpoint", receiver.endpoint]
        assert main([*command, "--header", f"{name}=3"]) == 1
        assert receiver.attempts == 0
    assert f"--header: header {name!r} is set by the exporter itself" in capsys.readouterr().err


def test_headers_are_merged_whatever_their_case(receiver: OTLPReceiver) -> None:
    """One value a header: a user's ``user-agent`` replaces the sender's ``User-Agent``; a
    header the request sets itself, given to a ``Sender``, is dropped: the request is whole."""
    sender = Sender(
        url=f"{receiver.endpoint}/v1/traces",
        headers={"user-agent": "mine/1", "content-type": "application/json", "Content-Length": "3"},
        timeout=5.0,
        build=lambda spans: pb.request(resource(), "asynctrack", "0", spans, SCHEMA_URL),
        max_queue_bytes=1 << 20,
        user_agent="asynctrack/0",
    )
    sender.put([b""])
    assert sender.flush(WAIT) is None
    sender.close(WAIT)
    assert (sender.exported, sender.failed, len(receiver.spans)) == (1, 0, 1)
    sent = receiver.headers[0]
    names = [name.lower() for name in sent]
    for name in ("user-agent", "content-type", "content-encoding", "content-length"):
        assert names.count(name) == 1, sent
    given = {name.lower(): value for name, value in sent.items()}
    assert given["user-agent"] == "mine/1"
    assert (given["content-type"], given["content-encoding"]) == ("application/x-protobuf", "gzip")


def test_an_exception_making_a_request_fails_the_batch_not_the_thread(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a request's making raises (a header http.client refuses, a bug in building
    the body) fails that batch, counted and logged without its message; the sender's thread
    goes on and sends the next batch."""
    fields = resource()
    calls = []

    def build(spans: Sequence[bytes]) -> bytes:
        calls.append(spans)
        if len(calls) == 1:
            raise RuntimeError(f"a bug, holding {SECRET}")
        return pb.request(fields, "asynctrack", "0", spans, SCHEMA_URL)

    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        sender = OTLPExporter(receiver.endpoint, timeout=5.0, metrics=False).sender(fields, build=build)
        sender.put([b""])
        flushed = sender.flush(WAIT)
        assert flushed is not None and "RuntimeError while making the request (not retried" in flushed
        assert (sender.exported, sender.failed, receiver.attempts) == (0, 1, 0)
        sender.put([b"", b""])
        assert sender.flush(WAIT) is None
        sender.close(WAIT)
        assert (sender.exported, sender.failed) == (2, 1)
        assert len(receiver.spans) == 2
        bad = Sender(
            url=f"{receiver.endpoint}/v1/traces",
            headers={"Authorization": "Bearer abc\r\nX-Injected: 1"},
            timeout=5.0,
            build=build,
            max_queue_bytes=1 << 20,
            user_agent="test",
        )
        for n in (1, 2):  # the thread lives on: each batch fails, counted
            bad.put([b""])
            flushed = bad.flush(WAIT)
            assert flushed is not None and "ValueError while making the request" in flushed
            assert bad.failed == n
        bad.close(WAIT)
    assert receiver.attempts == 1  # the good batch only
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "could not send spans" in logged
    assert SECRET not in logged and "Bearer abc" not in logged


@pytest.mark.timeout(240)
def test_mlflow_server_accepts_the_spans(
    tmp_path: Path, stub: OpenAIStub, mlflow_server: MLflowServer
) -> None:
    """On the session's MLflow server (`tests/conftest.py`), in an experiment of its own."""
    mlflow = pytest.importorskip("mlflow")
    server = mlflow_server
    client = mlflow.MlflowClient(server.url)
    experiment_id = client.create_experiment("otlp-export")
    tracker = _tracker(
        tmp_path / "logs",
        OTLPExporter(server.url, headers={"x-mlflow-experiment-id": experiment_id}),
    )
    weather_agent(stub.url, [tracker])
    tracker.close(timeout=WAIT)
    assert tracker.statistics().spans_exported == 4
    traces = client.search_traces(locations=[experiment_id])
    assert len(traces) == 1
    spans = traces[0].data.spans
    assert sorted(s.name for s in spans) == [
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "execute_tool get_weather",
        "invoke_workflow weather_agent",
    ]
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "invoke_workflow weather_agent"
    # MLflow's span types: from gen_ai.operation.name, and for the chain from
    # openinference.span.kind (without it, none).
    assert sorted(s.span_type for s in spans) == ["CHAIN", "CHAT_MODEL", "CHAT_MODEL", "TOOL"]


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_a_flush_never_waits_for_the_export_past_its_own_timeout(
    tmp_path: Path, receiver: OTLPReceiver, worker: str
) -> None:
    receiver.stall()
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, timeout=10.0), worker)
    failing_chain([tracker])
    tracker.flush_blocking(timeout=3.0)  # the files are written: no FlushTimeoutError
    receiver.release()
    tracker.close(timeout=WAIT)
    _assert_files_complete(tracker)


def test_spans_go_without_a_flush(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """A partial batch leaves after a second, with no flush and no close."""
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint), worker="thread")
    failing_chain([tracker])
    receiver.wait_for_spans(1, timeout=WAIT)
    tracker.close(timeout=WAIT)


class _Broken:
    """Exporter settings whose start fails (picklable: it goes to the worker process)."""

    def start(self) -> Any:
        raise RuntimeError("no exporter today")


def test_an_exporter_that_cannot_start_leaves_the_files_alone(tmp_path: Path) -> None:
    tracker = AsyncTracker(tmp_path / "logs", config=TrackerConfig(worker="thread"), exporters=[_Broken()])
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    _assert_files_complete(tracker)
    assert tracker.statistics().written == 2


def test_a_forked_child_in_thread_mode_exports_its_own_runs(tmp_path: Path, receiver: OTLPReceiver) -> None:
    # The child's copy of the parent's exporter is dead (its thread did not survive the
    # fork): the child starts its own, which sends the child's runs and nothing of the
    # parent's; the parent's exporter goes on.
    env = {**os.environ, "ASYNCTRACK_EXIT_TIMEOUT": "10"}
    env.pop("PYTHONWARNINGS", None)
    script = Path(__file__).parent / "scripts" / "export_fork.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "logs"), receiver.endpoint],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, b"0"), done.stderr
    spans = receiver.wait_for_spans(5, timeout=WAIT)
    names = sorted(s.name for s in spans)
    assert names == [
        "invoke_workflow child",
        "invoke_workflow child",
        "invoke_workflow child",
        "invoke_workflow parent-after",
        "invoke_workflow parent-before",
    ]
    assert len({attributes(s)["langchain.run_id"] for s in spans}) == 5  # each run sent once


@pytest.mark.parametrize("compressor", ["ISA-L (the otel extra)", "zlib"])
def test_request_bodies_are_gzip_with_either_compressor(
    compressor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    from asynctrack._export import _sender

    if compressor == "zlib":
        monkeypatch.setattr(_sender, "_gzip_compress", gzip.compress)
    else:
        assert _sender._gzip_compress.__module__.startswith("isal")
    body = b"".join(SpanAssembler().add([]) + [b"span %d " % n for n in range(2000)])
    sent = _sender.gzip_body(body)
    assert gzip.decompress(sent) == body
    assert sent[:3] == b"\x1f\x8b\x08" and sent[4:8] == bytes(4)  # gzip, deflate, no time in its header
    assert len(sent) < len(body) // 3
