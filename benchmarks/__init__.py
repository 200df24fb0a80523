"""Benchmarks for asynctrack (not part of the package, not run by CI as timing gates).

Run everything::

    .venv/bin/python -m benchmarks                # full suite, ~15 min on 2 cores
    .venv/bin/python -m benchmarks --smoke        # tiny sizes, seconds (used by the tests)

or one part::

    .venv/bin/python -m benchmarks.overhead       # A. callback overhead vs peers
    .venv/bin/python -m benchmarks.throughput     # B. events/s to local disk and S3 (moto)
    .venv/bin/python -m benchmarks.flush_latency  # C. flush() with 10^3..10^6 pending events
    .venv/bin/python -m benchmarks.loop_lag       # D. event-loop lag during a 10^5-event burst
    .venv/bin/python -m benchmarks.memory         # E. peak RSS, bounded buffers, stalled sink

Each prints a markdown table and PASS/MISS next to each goal (never asserted), and
writes ``benchmarks/results/<name>.json``, ``<name>.md`` and ``<name>.png`` (the chart
needs matplotlib; without it the chart is skipped with a note). Common options:
``--smoke``, ``--repeats N``, ``--out DIR``.

Peers (LangSmith, Langfuse) are optional: variants whose package is not importable
are skipped with a note. The old langchain-community ``SageMakerCallbackHandler``
needs SageMaker SDK v2, which conflicts with asynctrack's ``sagemaker-core>=2.27``;
it is benchmarked in a separate venv built by ``benchmarks/setup_legacy_venv.sh``
(skipped with a note when that venv does not exist).

Nothing here reaches beyond 127.0.0.1: peers point at a local stub HTTP server, S3 at
a moto server in a child process, and ``_common.install_loopback_guard()`` refuses
to resolve any other host name in every benchmark process.
"""
