"""Shared plumbing: options, reports (markdown, JSON, chart), machine facts, local servers.

Everything here is standard library only at import time, so that the legacy-venv
worker (``_legacy_worker``) can import the helpers it needs too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import http.server
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._reference import QUIET_US

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


# -- options -----------------------------------------------------------------------------


def parser(description: str, default_repeats: int = 5) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat: a few seconds")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"repeats per figure, median reported (default {default_repeats}; 1 with --smoke)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON/markdown/PNG")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) variants")
    p.add_argument("--no-peers", action="store_true", help="skip LangSmith/Langfuse/SageMaker")
    p.set_defaults(default_repeats=default_repeats)
    return p


def repeats(args: argparse.Namespace) -> int:
    if args.repeats is not None:
        return max(1, args.repeats)
    return 1 if args.smoke else args.default_repeats


# -- safety: never leave the machine ------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "::1", "0.0.0.0"}


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def install_loopback_guard() -> None:
    """Refuse to resolve any host but loopback in this process (and say which).

    Every client library here (requests, urllib3, aiohttp, botocore, OTLP) resolves
    the host before it connects, so a peer that ignored its configured stub endpoint
    fails loudly instead of reaching the internet.
    """
    if getattr(socket.getaddrinfo, "_bench_guard", False):
        return
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"benchmarks: non-loopback host {host!r} refused")
        return real(host, *args, **kwargs)

    guarded._bench_guard = True  # type: ignore[attr-defined]
    socket.getaddrinfo = guarded


def quiet_peer_env() -> None:
    """Environment for peers: no tracing unless a handler is passed, no telemetry."""
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING", "LANGSMITH_TRACING_V2"):
        os.environ.pop(name, None)
    os.environ["LANGSMITH_TRACING"] = "false"
    os.environ["LANGCHAIN_TRACING_V2"] = "false"
    os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
    os.environ["OTEL_SDK_DISABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["ANONYMIZED_TELEMETRY"] = "false"


def aws_test_env(endpoint_url: str | None = None) -> None:
    """Dummy credentials for moto; nothing from a user's profile is read."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url


# -- numbers -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{max(digits, 2)}f}"
    return str(value)


def settle() -> None:
    """Start each measurement from the same heap state."""
    gc.collect()


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- machine -----------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> str:
    """``<short sha>`` of the tree benchmarked, ``+dirty`` if asynctrack/ has uncommitted changes."""
    import subprocess

    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "asynctrack"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    return {
        "git": git_state(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in (
                "asynctrack",
                "langchain-core",
                "orjson",
                "aiobotocore",
                "botocore",
                "moto",
                "langsmith",
                "langfuse",
                "langchain-community",
                "sagemaker",
            )
        },
    }


# -- report ------------------------------------------------------------------------------


class Report:
    """Collects tables, goals and notes; prints markdown; writes JSON, markdown, PNG."""

    def __init__(self, name: str, title: str, args: argparse.Namespace) -> None:
        self.name = name
        self.title = title
        self.args = args
        self.tables: list[dict[str, Any]] = []
        self.goals: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.metrics: dict[str, float] = {}  # headline numbers, all finite and > 0
        self.data: dict[str, Any] = {}
        self.started = time.perf_counter()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[{self.name}] note: {text}", file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.tables.append({"title": title, "headers": list(headers), "rows": [list(r) for r in rows]})

    def goal(
        self,
        text: str,
        measured: float,
        target: float,
        *,
        lower_is_better: bool = True,
        unit: str = "",
        repeats: Sequence[float] | None = None,
    ) -> None:
        """A goal judged on ``measured``; with ``repeats`` (the per-repeat values whose median
        ``measured`` is), their spread is printed beside it and the goal is ``resolved`` when
        there are at least 3 and their interquartile range lies on one side of the target."""
        ok = math.isfinite(measured) and (measured <= target if lower_is_better else measured >= target)
        goal: dict[str, Any] = {
            "goal": text,
            "measured": measured,
            "target": target,
            "unit": unit,
            "op": "≤" if lower_is_better else "≥",
            "result": "PASS" if ok else "MISS",
        }
        values = sorted(v for v in repeats or () if math.isfinite(v))
        if values:
            q1, _, q3 = (
                statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
            )
            below, above = (q3 <= target, q1 > target) if lower_is_better else (q3 < target, q1 >= target)
            goal["repeats"] = values
            goal["spread"] = {"min": values[0], "q1": q1, "q3": q3, "max": values[-1]}
            goal["resolved"] = len(values) >= 3 and (below or above)
        self.goals.append(goal)

    def machine_speed(self, reference: Sequence[float]) -> float:
        """Note how fast the machine ran (``reference_us()`` readings taken during the run)
        and return its slowdown against the quiet machine the goals were set on."""
        reference_us = median(reference)
        slowdown = reference_us / QUIET_US
        self.metric("machine_slowdown", slowdown)
        self.note(
            f"Machine speed during the run: stdlib json.dumps of a 314-byte event took {reference_us:.2f} µs "
            f"({slowdown:.1f}x the {QUIET_US} µs of a quiet 2-core machine)."
        )
        return slowdown

    def goal_at_quiet_speed(
        self,
        text: str,
        measured: float,
        target: float,
        slowdown: float,
        *,
        rate: bool = False,
        unit: str = "",
    ) -> None:
        """The same goal read a second time, at the quiet machine's speed: a CPU-bound time
        divided by ``slowdown``, or a ``rate`` multiplied by it. Printed beside the reading
        as measured, never instead of it."""
        scaled, op = (measured * slowdown, "×") if rate else (measured / slowdown, "÷")
        self.goal(
            f"{text}, at the quiet machine's speed ({op} {slowdown:.2f}, this run's reference)",
            scaled,
            target,
            lower_is_better=not rate,
            unit=unit,
        )

    def metric(self, name: str, value: float) -> None:
        self.metrics[name] = value

    # -- output --

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        for table in self.tables:
            out += [f"### {table['title']}", ""]
            out.append("| " + " | ".join(table["headers"]) + " |")
            out.append("|" + "|".join("---" for _ in table["headers"]) + "|")
            for row in table["rows"]:
                out.append("| " + " | ".join(fmt(c) for c in row) + " |")
            out.append("")
        if self.goals:
            out += ["### Goals", ""]
            for g in self.goals:
                out.append(
                    f"- **{g['result']}** {g['goal']}: measured {fmt(g['measured'], 2)}{g['unit']}"
                    f" (target {g['op']} {fmt(g['target'], 2)}{g['unit']}{spread_text(g)})"
                )
            out.append("")
        if self.notes:
            out += ["### Notes", ""]
            out += [f"- {n}" for n in self.notes]
            out.append("")
        return "\n".join(out)

    def finish(self, chart: Callable[[Any], None] | None = None) -> Path:
        """Print the markdown; write JSON, markdown and (if matplotlib) the chart."""
        out_dir: Path = self.args.out
        out_dir.mkdir(parents=True, exist_ok=True)
        if chart is not None:
            self._chart(chart, out_dir / f"{self.name}.png")
        elapsed = time.perf_counter() - self.started
        self.note(f"{self.name} took {elapsed:.1f} s wall")
        text = self.markdown()
        print(text, flush=True)
        (out_dir / f"{self.name}.md").write_text(text + "\n", encoding="utf-8")
        payload = {
            "benchmark": self.name,
            "title": self.title,
            "machine": machine(),
            "options": {
                "smoke": self.args.smoke,
                "repeats": repeats(self.args),
                "no_s3": self.args.no_s3,
                "no_peers": self.args.no_peers,
            },
            "elapsed_s": elapsed,
            "tables": self.tables,
            "goals": self.goals,
            "notes": self.notes,
            "metrics": self.metrics,
            "data": self.data,
        }
        path = out_dir / f"{self.name}.json"
        path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
        return path

    def _chart(self, draw: Callable[[Any], None], path: Path) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.note("matplotlib is not installed: chart skipped (pip install matplotlib)")
            return
        try:
            draw(plt)
            plt.tight_layout()
            plt.savefig(path, dpi=110)
        except Exception as exc:  # a chart must never lose the numbers
            self.note(f"chart failed: {exc!r}")
        finally:
            plt.close("all")


def spread_text(goal: dict[str, Any]) -> str:
    """``"; 5 repeats -0.8..3.1, IQR 0.2..1.9: not resolved"`` for a goal judged with its
    repeats (``Report.goal``), or nothing."""
    spread = goal.get("spread")
    if not spread:
        return ""
    n, unit = len(goal["repeats"]), goal["unit"]
    if n < 3:
        return f"; {n} repeat{'s' if n > 1 else ''} {fmt(spread['min'], 2)}..{fmt(spread['max'], 2)}{unit}: too few to resolve"
    return (
        f"; {n} repeat{'s' if n > 1 else ''} {fmt(spread['min'], 2)}..{fmt(spread['max'], 2)}{unit}, "
        f"IQR {fmt(spread['q1'], 2)}..{fmt(spread['q3'], 2)}{unit}: "
        + ("resolved" if goal["resolved"] else "not resolved (the IQR straddles the target)")
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return repr(value)


# -- S3 via moto ---------------------------------------------------------------------------


def s3_sink_problem() -> str | None:
    """Why the S3 sink cannot be used here, or None."""
    try:
        import aiobotocore  # noqa: F401
    except ImportError as exc:
        return f"aiobotocore not installed ({exc})"
    try:
        import asynctrack._sinks._s3  # noqa: F401
    except ImportError as exc:
        return f"asynctrack's S3 sink is not importable yet ({exc})"
    return None


@contextlib.contextmanager
def moto_s3(report: Report, bucket: str = "asynctrack-bench") -> Iterator[str | None]:
    """Start moto in a child process and create ``bucket``; yield its endpoint (or None + note)."""
    # The moto launcher is test infrastructure (tests/_infra), not part of the package.
    tests_dir = str(Path(__file__).resolve().parent.parent / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    try:
        from _infra.aws import MotoServer
    except ImportError as exc:
        report.note(f"S3 variants skipped: tests/_infra/aws.py MotoServer not importable ({exc})")
        yield None
        return
    server = MotoServer()
    try:
        server.start()
    except Exception as exc:
        report.note(f"S3 variants skipped: moto did not start ({exc!r})")
        yield None
        return
    try:
        aws_test_env()
        try:
            _create_bucket(server.endpoint_url, bucket)
        except Exception as exc:
            report.note(f"S3 variants skipped: could not create bucket on moto ({exc!r})")
            yield None
            return
        yield server.endpoint_url
    finally:
        server.stop()


def _create_bucket(endpoint_url: str, bucket: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # botocore's utcnow()
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()


# -- a stub HTTP endpoint for LangSmith and Langfuse ----------------------------------------

_LANGSMITH_INFO = {
    "version": "0.10.0",
    "license_expiration_time": None,
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
    },
    "instance_flags": {"zstd_compression_enabled": True},
}


class _StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _body(self) -> int:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            size = 0
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return size
                self.rfile.read(n)
                self.rfile.readline()
                size += n
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
        return length

    def _answer(self) -> None:
        size = self._body()
        path = self.path.split("?")[0]
        self.server.count(self.command, path, size)
        if path.rstrip("/").endswith("/info"):
            status, body = 200, _LANGSMITH_INFO
        elif self.command in ("POST", "PATCH") and "/runs" in path:
            status, body = 202, {"status": "accepted"}
        elif "otel" in path:
            status, body = 200, {}
        elif self.command == "GET":
            status, body = 200, {"data": [], "meta": {"page": 1, "total_items": 0}}
        else:
            status, body = 200, {"success": True, "id": "00000000-0000-0000-0000-000000000000"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


class _StubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.paths: dict[str, int] = {}

    def count(self, method: str, path: str, size: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += size
            key = f"{method} {path}"
            self.paths[key] = self.paths.get(key, 0) + 1


class StubHTTP:
    """A loopback HTTP server that accepts everything (LangSmith / Langfuse stand-in)."""

    def __init__(self) -> None:
        self._server = _StubServer()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-stub-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stats(self) -> dict[str, Any]:
        with self._server.lock:
            return {
                "requests": self._server.requests,
                "bytes": self._server.bytes,
                "paths": dict(self._server.paths),
            }

    def __enter__(self) -> StubHTTP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class StubHTTPProcess:
    """:class:`StubHTTP` in a child process of its own, for a benchmark that reads its own
    process's CPU as the application's: the stub's serving is then not counted in it.
    ``stats()`` is read when the child ends (after ``__exit__``); it serves until its stdin
    ends (``__exit__`` closes it, or this process dies)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._stats: dict[str, Any] = {}
        self.url = ""

    def stats(self) -> dict[str, Any]:
        return self._stats

    def __enter__(self) -> StubHTTPProcess:
        script = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks._common import _serve_stub; _serve_stub()"
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C stops the benchmark, which stops the stub
        )
        self._process = process
        assert process.stdout is not None
        self.url = process.stdout.readline().strip()
        if not self.url:
            self.__exit__()
            raise RuntimeError(
                f"the stub HTTP server's process did not start (exit code {process.returncode})"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            self._stats = json.loads(process.stdout.readline() or "{}")
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        finally:
            process.stdout.close()


def _serve_stub() -> None:
    """The child of :class:`StubHTTPProcess`: serves, prints its URL, then its stats when its
    stdin ends."""
    with StubHTTP() as stub:
        print(stub.url, flush=True)
        sys.stdin.read()
        print(json.dumps(stub.stats()), flush=True)


# -- callgrind: instructions counted in a child process --------------------------------------

#: Set in a child run under callgrind: ``callgrind_instrument`` switches counting there.
CALLGRIND_CHILD = "ASYNCTRACK_CALLGRIND"


def callgrind_instrument(on: bool) -> None:
    """Switch callgrind's counting of this process on or off (``callgrind_control``), in a
    child run by ``callgrind_total``; outside valgrind, nothing."""
    if os.environ.get(CALLGRIND_CHILD):
        command = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def callgrind_total(
    command: Sequence[str], out: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Run ``command`` under callgrind, counting off at its start (the child switches it on
    around what it measures: ``callgrind_instrument``), with ``PYTHONHASHSEED=0``; the
    instructions counted (the summary of ``out``, the callgrind file written)."""
    env = dict(os.environ if env is None else env, PYTHONHASHSEED="0", **{CALLGRIND_CHILD: "1"})
    callgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    subprocess.run(
        [*callgrind, *command],
        env=env,
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    match = re.search(rb"^totals: (\d+)", out.read_bytes(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary in {out}")
    return int(match.group(1))


# -- an OTLP receiver in a process of its own ------------------------------------------------


def otlp_receiver_process() -> tuple[subprocess.Popen[str], str]:
    """The tests' loopback OTLP receiver (``tests/_infra/otlp_receiver.py``, which decodes
    every request) in a process of its own, so that its work is not counted as this
    process's; and its endpoint. Stopped by closing its stdin (``communicate("")``)."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from _infra.otlp_receiver import OTLPReceiver;"
        "r = OTLPReceiver().__enter__(); print(r.endpoint, flush=True); sys.stdin.read(); r.stop()"
    )
    command = [sys.executable, "-c", script, str(ROOT / "tests")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# -- blackhole TCP server (accepts, never answers) ------------------------------------------


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never answers: a stalled S3."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="bench-blackhole", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)  # kept open, never read: the client's send buffer fills

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._listener.close()


class OptionalMoto:
    """``moto_s3`` as a context manager that yields ``None`` when S3 is unusable
    (``problem`` says why), so the S3 variants are skipped with a note."""

    def __init__(self, report: Report, problem: str | None) -> None:
        self.report, self.problem = report, problem
        self._cm: contextlib.AbstractContextManager[str | None] | None = None

    def __enter__(self) -> str | None:
        if self.problem:
            return None
        self._cm = moto_s3(self.report)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
