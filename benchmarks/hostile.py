"""Hostile corpus: every field costs time linear in its size (issue 9, goal ≤ 20 ms per 256 KiB field).

    python -m benchmarks.hostile [--smoke] [--repeats N] [--out DIR]

Each corpus entry is one 256 KiB string field (64 KiB with ``--smoke``) built to
make a text scan slow: the prefix of every detector repeated, near misses (a
prefix followed by one character too few), credential key words glued or
separated, long runs of each separator, JSON text and escaped quotes, base64 runs.
For each, the CPU time of the application side (capturing the callback arguments
to bytes) and of the worker side (translate + redact + encode one event, the field
in the body and the same text as a streamed token) is the median of ``--repeats``
runs; the worker figures are checked against 20 ms.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from asynctrack._capture import Capturer
from asynctrack._config import TrackerConfig
from asynctrack._events._translate import EventTranslator

from . import _common as c
from ._reference import reference_us

GOAL_MS = 20.0


def corpus(size: int) -> dict[str, str]:
    """Name -> a string of ``size`` characters (ASCII, so also bytes)."""

    def fill(unit: str) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    out = {
        "plain prose": fill("The quick brown fox jumps over the lazy dog. "),
        "'sk-' repeated": fill("sk-"),
        "'sk-' + 19 chars (near miss)": fill("sk-abcdefghijklmnopqrs "),
        "'-----BEGIN RSA PRIVATE KEY-----' repeated": fill("-----BEGIN RSA PRIVATE KEY-----"),
        "BEGIN/END pairs": fill("-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----"),
        "'-----BEGIN ' near miss": fill("-----BEGIN A B C D E F "),
        "'password=' repeated": fill("password="),
        "'password=x ' repeated": fill("password=x "),
        "'password' glued": fill("password"),
        "'Authorization:' repeated": fill("Authorization:"),
        "'Authorization: Bearer ' repeated": fill("Authorization: Bearer "),
        "'x-api-key: ' repeated": fill("x-api-key: "),
        "'key' repeated": fill("key"),
        "'key ' repeated": fill("key "),
        "'token=' repeated": fill("token="),
        "'secret' + 60 letters": fill("secret" + "a" * 60 + " "),
        '\'"password": "\' repeated': fill('"password": "'),
        "'{\"api_key\": ' nested JSON text": fill('{"api_key": {"api_key": '),
        "'Bearer ' repeated": fill("Bearer "),
        "'bearer ' + 15 chars (near miss)": fill("bearer abcdefghijklmno "),
        "'eyJ' repeated": fill("eyJ"),
        "'eyJ' + 9 chars + '.' (near miss)": fill("eyJabcdefghi."),
        "'AKIA' repeated": fill("AKIA"),
        "'AKIA' + 15 (near miss)": fill("AKIAABCDEFGHIJKLMNO "),
        "'ghp_' repeated": fill("ghp_"),
        "'xoxb-' repeated": fill("xoxb-"),
        "'AIza' repeated": fill("AIza"),
        "'://' repeated": fill("://"),
        "'://a:' repeated": fill("://a:"),
        "'://' + user + ':' + 300 chars, no '@'": fill("://user:" + "p" * 300 + " "),
        "'@' repeated": fill("@"),
        "'=' run": fill("="),
        "':' run": fill(":"),
        "'\"' run (escaped in JSON)": fill('"'),
        "backslash run": fill("\\"),
        "whitespace run": fill(" \t\n"),
        "newline run": fill("\n"),
        "base64 run": fill("Ab9+/xY2"),
        "40-char base64 runs": fill("wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12 "),
        "41-char base64 runs": fill("wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY123 "),
        "'aws ' + 40-char runs": fill("aws wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12 "),
        "word chars run": fill("a"),
        "'a-' run": fill("a-"),
        "'sk-' + long run": "sk-" + fill("a")[3:],
        # Words dense with a '-' or '_' before a glued format's first letters.
        "'-s' x32 words": fill("-s" * 32 + " "),
        "'-gh' words": fill("-gh" * 21 + "x "),
        "'_sk_' words": fill("_sk_" * 16 + " "),
        "'-AKIA' words": fill("-AKIA" * 13 + " "),
        "'-sk-learn' repeated": fill("-sk-learn"),
        "'-xoxb-' + 15 chars (near miss)": fill("-xoxb-abcdefghijklmn"),
        # The detectors of the public rule sets' formats: their literals repeated, near
        # misses, and dense hits (Python per hit).
        "'machine ' repeated": fill("machine "),
        "'machine h login u ' (no password)": fill("machine h login u "),
        ".pgpass lines": fill("\nh:1:d:u:p"),
        ".pgpass near miss (no password)": fill("\nh:1:d:u:"),
        "':AA' after digits": fill("12345:AA"),
        "Mailchimp keys": fill("0f1e2d3c4b5a69788796a5b4c3d2e1f0-us1 "),
        "'-us' repeated": fill("-us"),
        "'Signature=' repeated": fill("Signature="),
        "'&sig=' repeated": fill("&sig="),
        "'hvs.' repeated": fill("hvs."),
        "'pat' repeated": fill("pat"),
        "'NRAL' repeated": fill("NRAL"),
        "'/api/webhooks/<id>/' repeated": fill("/api/webhooks/1234567/"),
        "'PuTTY-User-Key-File-' repeated": fill("PuTTY-User-Key-File-"),
        "'---- BEGIN SSH2 ' near miss": fill("---- BEGIN SSH2 "),
        "'jdbc:oracle:thin:u/' (no '@')": fill("jdbc:oracle:thin:u/"),
    }
    return out


def _time(fn: Callable[[], object], repeats: int) -> float:
    """CPU ms of ``fn`` (median): the time the work holds the CPU (and the GIL), which
    on a shared machine wall time overstates by however long the process waited."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return c.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__ or "", default_repeats=5)
    args = p.parse_args(argv)
    size = 64 * 1024 if args.smoke else 256 * 1024
    n = c.repeats(args)
    report = c.Report("hostile", f"H. Hostile corpus: {size // 1024} KiB fields", args)
    config = TrackerConfig(max_field_bytes=size)
    capture = Capturer(config.max_field_bytes, config.max_depth)
    reference = [reference_us()]
    rows = []
    worst_worker = 0.0
    worst_app = 0.0
    run_id = uuid.uuid4()
    for name, text in corpus(size).items():
        body = capture({"data": {"text": text}, "tags": (), "metadata": {}})
        translator = EventTranslator(experiment="e", run="r", writer="w", config=config)
        record = ("tool_end", 1, time.time(), run_id, None, "tool", body, None)
        app_ms = _time(lambda t=text: capture({"data": {"text": t}, "tags": (), "metadata": {}}), n)
        worker_ms = _time(lambda r=record, tr=translator: tr(r), n)  # type: ignore[misc]
        # The same text as a streamed token and in an error message.
        token_ms = _time(
            lambda tr=translator, t=text: tr(
                ("llm_new_token", 2, 0.0, run_id, None, None, b'{"data":{}}', t)
            ),
            n,
        )
        worst_worker = max(worst_worker, worker_ms, token_ms)
        worst_app = max(worst_app, app_ms)
        ok = "PASS" if max(worker_ms, token_ms) <= GOAL_MS else "MISS"
        rows.append([name, app_ms, worker_ms, token_ms, ok])
        report.progress(f"{name}: app {app_ms:.2f} ms, worker {worker_ms:.2f} ms, token {token_ms:.2f} ms")
    reference.append(reference_us())
    slowdown = report.machine_speed(reference)
    report.table(
        f"Per {size // 1024} KiB field, ms (median of {n})",
        ["field", "app: capture", "worker: field in body", "worker: field as a token", f"≤ {GOAL_MS:g} ms"],
        rows,
    )
    report.metric("worst_worker_ms", max(worst_worker, 1e-6))
    report.metric("worst_app_ms", max(worst_app, 1e-6))
    report.goal(f"every {size // 1024} KiB hostile field, worker side", worst_worker, GOAL_MS, unit=" ms")
    report.goal_at_quiet_speed("... the same", worst_worker, GOAL_MS, slowdown, unit=" ms")
    report.note(f"{sum(r[-1] == 'PASS' for r in rows)} of {len(rows)} fields within {GOAL_MS:g} ms")
    report.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
