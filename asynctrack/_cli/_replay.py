"""``asynctrack replay``: deliver the batches kept in a spool directory."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from .._langchain._spec import DEFAULT_SPOOL_DIR
from .._pipeline._spool import Spool, spooled_destinations
from .._sinks._registry import make_sink

__all__ = ["default_spool_dir", "replay"]


def default_spool_dir() -> str:
    """The tracker's default spool: ``$ASYNCTRACK_SPOOL_DIR``, else ``~/.cache/asynctrack/spool``."""
    return os.environ.get("ASYNCTRACK_SPOOL_DIR") or DEFAULT_SPOOL_DIR


def replay(spool_dir: str, *, s3_options: dict[str, Any]) -> int:
    """Deliver every spooled batch to its destination; delete each once delivered.

    The S3 options the spooling tracker used (endpoint, profile, region,
    encryption, bucket owner) are kept with the spool; ``s3_options`` override them.

    Returns:
        0 when everything was delivered (or nothing was spooled), 1 otherwise,
        including a spool directory that does not exist.
    """
    if not Path(spool_dir).expanduser().is_dir():
        print(f"asynctrack replay: no spool directory at {spool_dir}", file=sys.stderr)
        return 1
    destinations = spooled_destinations(spool_dir)
    if not destinations:
        print(f"nothing spooled in {spool_dir}")
        return 0

    async def deliver(destination: str, options: dict[str, str]) -> tuple[int, int, int]:
        spool = Spool(spool_dir, destination, max_bytes=0)
        spool.tighten()  # even when the destination is not reachable now
        sink = make_sink(destination, **{**options, **s3_options})
        sent = events = failed = 0
        try:
            await sink.start()
            # Claimed (atomic renames) like a tracker claims them: a tracker recovering
            # the same spool meanwhile never takes the same batch; failures go back.
            for batch in spool.claim():
                try:
                    payload = Spool.load(batch)  # a damaged file: its whole lines (it says so)
                    if payload.events:
                        await sink.write_batch(payload)
                except Exception as exc:
                    failed += 1
                    spool.release(batch)
                    print(f"  {batch.key}: not delivered: {exc}", file=sys.stderr)
                    continue
                Spool.remove(batch)
                sent += 1
                events += payload.events
        finally:
            spool.close()
            await sink.aclose()
        return sent, events, failed

    status = 0
    for destination, options in destinations:
        try:
            sent, events, failed = asyncio.run(deliver(destination, options))
        except Exception as exc:
            print(f"{destination}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{destination}: delivered {sent} batch(es), {events} event(s); {failed} still spooled")
        status = status or (1 if failed else 0)
    return status
