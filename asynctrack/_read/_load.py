"""Read events back: ``load()`` (a pandas DataFrame, through ``scan()``) and ``read_events()`` (dicts)."""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._capture import valid_text
from .._layout import safe_segment

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "is_event", "load", "read_events", "read_parameters"]

#: The DataFrame's columns, in order. ``data`` holds the kind-specific payload.
COLUMNS = (
    "seq",
    "ts",
    "kind",
    "experiment",
    "run",
    "tracker",
    "run_id",
    "parent_run_id",
    "name",
    "tags",
    "metadata",
    "duration",
    "data",
)


def check_names(experiment_name: str | None, run_name: str | None) -> None:
    """Refuse an empty name, as the tracker does (``None`` is every experiment or run).

    Raises:
        ValueError: ``experiment_name`` or ``run_name`` is ``""``.
    """
    for what, name in (("experiment_name", experiment_name), ("run_name", run_name)):
        if name == "":
            raise ValueError(f"{what} must be a non-empty string or None (every one), got ''")


def names_asked(experiment_name: str | None, run_name: str | None) -> dict[str, str]:
    """The envelope fields a reader keeps events by (``experiment``, ``run``), each as the
    writer maps its name; ``None`` asks for none."""
    asked = (("experiment", experiment_name), ("run", run_name))
    return {field: valid_text(name) for field, name in asked if name is not None}


_INT64: Final = range(-(1 << 63), 1 << 63)  # the seq a reader's Int64 column holds
_MAX_TS: Final = 1e12  # seconds (the year 33658): load()'s microseconds are an Int64
_NUMBER: Final = (int, float)
_TEXT: Final = ("kind", "experiment", "run")
_VALUES: Final = ("tracker", "run_id", "parent_run_id", "name")
_CONTAINERS: Final = (dict, list)


def is_event(event: Any) -> bool:
    """Whether a parsed line is an event: a JSON object with the envelope's fields of
    their types (``seq`` an integer, ``ts`` a number of seconds under 10^12, ``kind``,
    ``experiment`` and ``run`` strings), a ``data`` (not null), and its other fields,
    where present, of the types the readers' columns hold (``tracker``, the run ids and
    ``name`` no object or list, ``duration`` a number or null, ``tags`` null or a list of
    such values). The Polars path (``scan``) decides by the same rules."""
    if type(event) is not dict or event.get("data") is None:
        return False
    seq, duration, tags = event.get("seq"), event.get("duration"), event.get("tags")
    ts: Any = event.get("ts")
    return (
        type(seq) is int
        and seq in _INT64
        and type(ts) in _NUMBER
        and -_MAX_TS < ts < _MAX_TS
        and all(type(event.get(field)) is str for field in _TEXT)
        and not any(isinstance(event.get(field), _CONTAINERS) for field in _VALUES)
        and (duration is None or type(duration) in _NUMBER)
        and (tags is None or (type(tags) is list and not any(isinstance(tag, _CONTAINERS) for tag in tags)))
    )


def _theirs(document: dict[str, Any], names: dict[str, str]) -> bool:
    """Whether ``document`` (an event, a parameters document) is of the names asked. One
    without such a field is its directory's: names that differ only in case share one on
    a case-insensitive file system, and the fields say whose each is."""
    return all(document.get(field, name) == name for field, name in names.items())


def _pattern(experiment_name: str | None, run_name: str | None) -> str:
    experiment = safe_segment(experiment_name) if experiment_name else "*"
    run = safe_segment(run_name) if run_name else "*"
    return f"experiment={experiment}/run={run}/date=*/*.jsonl*"


def _parse(name: str, data: bytes, destination: object = None) -> Iterator[dict[str, Any]]:
    """The events of one file (``_parsed``)."""
    for _line, event in _parsed(name, data, destination):
        yield event


def event_lines(name: str, data: bytes, names: dict[str, str], destination: object = None) -> Iterator[bytes]:
    """The lines of one file that are events of ``names`` (``names_asked``), as written:
    for a reader of lines (``asynctrack export``), by ``read_events``' rules."""
    for line, event in _parsed(name, data, destination):
        if _theirs(event, names):
            yield line


def _parsed(name: str, data: bytes, destination: object = None) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """The events of one file, each with its line. A line that is not an event
    (``is_event``: a file cut short, copied or synced in part, a line not the tracker's;
    the tracker's own writes are whole) is skipped, and the file named once in a warning
    with their count."""
    cut_short = False
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error):
            cut_short = True
            try:  # what can be read of it: its last line is then likely cut short
                data = zlib.decompressobj(wbits=31).decompress(data)
            except zlib.error:
                data = b""
    skipped = 0
    for line in data.splitlines():
        if line.strip():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            if is_event(event):
                yield line, event
            else:
                skipped += 1
    if skipped or cut_short:
        damaged = " (the file is damaged or cut short)" if cut_short else ""
        where = "" if destination is None else f" under {destination}"
        warnings.warn(f"skipped {skipped} unreadable line(s) in {name}{where}{damaged}", stacklevel=2)


def _local_files(root: Path, pattern: str) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.glob(pattern)):
        if path.name.startswith("."):
            continue  # a temporary file being written
        yield path.name, path.read_bytes()


def _files(
    destination: str | os.PathLike[str], pattern: str, s3_options: dict[str, Any]
) -> Iterator[tuple[str, bytes]]:
    if isinstance(destination, str) and destination.startswith("s3://"):
        try:
            from .._sinks._s3 import read_objects
        except ImportError as exc:
            raise ImportError(
                f"reading {destination} needs the s3 extra (aiobotocore): pip install 'asynctrack[s3]'"
            ) from exc

        return read_objects(destination, pattern, **s3_options)
    return _local_files(Path(destination).expanduser(), pattern)


def read_parameters(
    destination: str | os.PathLike[str],
    experiment_name: str,
    run_name: str,
    **s3_options: Any,
) -> dict[str, Any]:
    """A run's parameters, merged over every process that wrote the run.

    Counts (``events_*``, ``tokens_*``) are summed across writers; other values
    are taken from the latest document.
    """
    check_names(experiment_name, run_name)
    pattern = f"experiment={safe_segment(experiment_name)}/run={safe_segment(run_name)}/params/*.json"
    names = names_asked(experiment_name, run_name)
    merged: dict[str, Any] = {}
    for _, data in _files(destination, pattern, s3_options):
        document = orjson.loads(data)
        if not _theirs(document, names):
            continue  # another run's, in the same directory
        for key, value in document.get("parameters", {}).items():
            if key.startswith(("events_", "tokens_")) and isinstance(value, int):
                merged[key] = merged.get(key, 0) + value
            else:
                merged[key] = value
    return merged


def read_events(
    destination: str | os.PathLike[str],
    experiment_name: str | None = None,
    run_name: str | None = None,
    **s3_options: Any,
) -> list[dict[str, Any]]:
    """Every event under ``destination`` (optionally one experiment / run), in order.

    Order: trackers by their first event's time, then sequence number. A line that is not
    an event (a file cut short or damaged; an object without the envelope's fields of
    their types: ``is_event``) is skipped, with a warning naming the file and how many. Only the events
    whose own ``experiment`` and ``run`` fields are the names given are returned: names
    that differ only in case share one directory on a case-insensitive file system.

    Args:
        destination: a directory or ``s3://bucket/prefix`` (``s3`` extra).
        experiment_name: only this experiment.
        run_name: only this run.
        **s3_options: for ``s3://``: ``endpoint_url``, ``region_name``, ``session``.

    Raises:
        ValueError: a name is ``""`` (``None`` is every experiment or run).
    """
    check_names(experiment_name, run_name)
    files = _files(destination, _pattern(experiment_name, run_name), s3_options)
    names = names_asked(experiment_name, run_name)
    events = [
        event for name, data in files for event in _parse(name, data, destination) if _theirs(event, names)
    ]
    first: dict[str, float] = {}
    for event in events:
        tracker = str(event.get("tracker"))
        ts = event.get("ts") or 0.0
        if tracker not in first or ts < first[tracker]:
            first[tracker] = ts
    events.sort(key=lambda e: (first[str(e.get("tracker"))], str(e.get("tracker")), e.get("seq", -1)))
    return events


def load(
    destination: str | os.PathLike[str],
    experiment_name: str | None = None,
    run_name: str | None = None,
    **s3_options: Any,
) -> pd.DataFrame:
    """The events under ``destination`` as a pandas DataFrame, one row per event.

    ``scan(...).collect().to_pandas()``, in ``read_events()`` order. Columns are
    ``COLUMNS``; ``ts`` is a UTC timestamp, ``duration`` seconds (end and error
    events), ``data`` and ``metadata`` the payloads as dicts, ``tags`` lists.
    Needs the ``pandas`` extra.

    Raises:
        FileNotFoundError: the directory, experiment or run was not found (the
            message says which, and what is there).
        ValueError: a name is ``""`` (``None`` is every experiment or run).
    """
    try:
        import pandas as pd
        import polars as pl
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "asynctrack.load() needs pandas and polars: pip install 'asynctrack[pandas]'"
        ) from exc
    from ._scan import scan

    frame = (
        scan(destination, experiment_name, run_name, **s3_options)
        # read_events() order: trackers by their first event, then sequence number.
        .sort(pl.col("ts").min().over("tracker"), "tracker", "seq")
        .with_columns((pl.col("ts") * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")))
        .select(COLUMNS)
        .collect()
        .to_pandas()
    )
    # The payloads are JSON text in the scan; a DataFrame user expects Python values. A
    # missing one (a placeholder for an event that could not be translated has only its
    # kind and data) may come from pandas as NaN, not None.
    for column in ("data", "metadata"):
        frame[column] = [orjson.loads(text) if type(text) is str else None for text in frame[column]]
    frame["tags"] = [None if tags is None or type(tags) is float else list(tags) for tags in frame["tags"]]
    assert isinstance(frame, pd.DataFrame)
    return frame
