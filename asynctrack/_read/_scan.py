"""``scan()``: a lazy Polars frame over the event files, pruned by partition.

The files are hive-partitioned (``experiment=<e>/run=<r>/date=<YYYY-MM-DD>/``).
Pruning happens before Polars sees anything: only the prefixes of the selected
experiment and run are listed, files outside the date range are dropped from the
list, and Polars reads the rest lazily. So the memory a filtered scan needs is
bounded by the selected run's files, not by the destination's.

The envelope fields become typed columns; ``data`` and ``metadata`` stay JSON
text (their shape differs per event kind: ``pl.col("data").str.json_path_match
("$.response.llm_output.token_usage.total_tokens")`` reaches into them), and
``date`` comes from the partition.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._layout import safe_segment
from .._sinks._registry import scheme_of
from ._load import check_names, is_event, names_asked

if TYPE_CHECKING:
    import polars as pl

__all__ = ["EventFiles", "find_event_files", "scan"]

_EVENT_FILE: Final = re.compile(
    r"^experiment=(?P<experiment>[^/]+)/run=(?P<run>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?P<name>[^/.][^/]*\.jsonl(?:\.gz)?)$"
)


def _envelope() -> pl.Struct:
    import polars as pl

    return pl.Struct(
        {
            "seq": pl.Int64,
            "ts": pl.Float64,
            "kind": pl.String,
            "experiment": pl.String,
            "run": pl.String,
            "tracker": pl.String,
            "run_id": pl.String,
            "parent_run_id": pl.String,
            "name": pl.String,
            "tags": pl.List(pl.String),
            "duration": pl.Float64,
        }
    )


def _as_date(value: str | datetime.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return datetime.date.fromisoformat(value).isoformat()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventFiles:
    """The event files a scan reads, after pruning.

    Attributes:
        uris: paths or ``s3://`` URIs, sorted.
        storage_options: for Polars (S3 credentials, region, endpoint); empty locally.
        partitions: the ``(experiment, run)`` partition names seen, as made safe.
    """

    uris: tuple[str, ...]
    storage_options: dict[str, str]
    partitions: frozenset[tuple[str, str]]


def _prefixes(experiment: str | None, run: str | None) -> list[str]:
    if experiment is None:
        return [""]
    if run is None:
        return [f"experiment={experiment}/"]
    return [f"experiment={experiment}/run={run}/"]


def _local_keys(root: Path, experiment: str | None, run: str | None) -> list[str]:
    pattern = f"experiment={experiment or '*'}/run={run or '*'}/date=*/*.jsonl*"
    return [path.relative_to(root).as_posix() for path in root.glob(pattern)]


def _select(
    keys: Iterable[str],
    run: str | None,
    since: str | None,
    until: str | None,
) -> tuple[list[str], set[tuple[str, str]]]:
    selected: list[str] = []
    partitions: set[tuple[str, str]] = set()
    for key in keys:
        match = _EVENT_FILE.match(key)
        if match is None:
            continue  # parameters, temporary files, anything not ours
        partitions.add((match["experiment"], match["run"]))
        if run is not None and match["run"] != run:
            continue
        date = match["date"]
        if (since is not None and date < since) or (until is not None and date > until):
            continue
        selected.append(key)
    return sorted(selected), partitions


_STRING: Final = r'"(?:[^"\\]|\\.)*"'
_INT: Final = r"-?(?:0|[1-9][0-9]{0,17})"  # within Int64
_FLOAT: Final = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,2})?"  # finite
_TS: Final = r"-?(?:0|[1-9][0-9]{0,11})(?:\.[0-9]+)?"  # under 10^12 (is_event)
#: The start of a line as the tracker writes it, up to ``data``: each envelope field of a
#: type ``is_event`` takes (the rest of the line: ``json_path_match`` of ``data``).
_TRACKER_LINE: Final = (
    rf'^\{{"seq":{_INT},"ts":{_TS},"kind":{_STRING},"experiment":{_STRING},"run":{_STRING},'
    rf'"tracker":{_STRING},"run_id":(?:{_STRING}|{_INT}|null),"parent_run_id":(?:{_STRING}|{_INT}|null),'
    rf'"name":(?:{_STRING}|null),"duration":(?:{_FLOAT}|null),"data":\{{'
)


def _checked(lines: pl.Series) -> pl.Series:
    """Each line (null but where asked) that is an event (``is_event``) as orjson writes
    it, else null."""
    import polars as pl

    def checked(line: str) -> str | None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        return orjson.dumps(event).decode() if is_event(event) else None

    return lines.map_elements(checked, return_dtype=pl.String, skip_nulls=True)


def _readable(unreadable: pl.Series) -> pl.Series:
    """Which lines to keep, given the file of each unreadable one (null for the others);
    says once per file how many were skipped."""
    for path, count in unreadable.drop_nulls().value_counts(sort=True).iter_rows():
        warnings.warn(f"skipped {count} unreadable line(s) in {path}", stacklevel=1)
    return unreadable.is_null()


def _listed(names: Iterable[str], most: int = 20) -> str:
    """``a, b, c`` for a message, the first ``most`` only: a bucket may hold thousands of runs."""
    ordered = sorted(names)
    shown = ", ".join(ordered[:most])
    return f"{shown}, and {len(ordered) - most} more" if len(ordered) > most else shown


def _not_found(
    destination: str,
    experiment_name: str | None,
    run_name: str | None,
    everything: set[tuple[str, str]],
    dated: bool,
) -> FileNotFoundError:
    experiments = {e for e, _ in everything}
    if not everything:
        return FileNotFoundError(f"no asynctrack event files under {destination}")
    if experiment_name is not None and safe_segment(experiment_name) not in experiments:
        there = _listed(experiments)
        return FileNotFoundError(
            f"no experiment {experiment_name!r} under {destination} (experiments there: {there})"
        )
    if run_name is not None:
        runs = {r for e, r in everything if experiment_name is None or e == safe_segment(experiment_name)}
        if safe_segment(run_name) not in runs:
            where = f"experiment {experiment_name!r}" if experiment_name else destination
            return FileNotFoundError(f"no run {run_name!r} in {where} (runs there: {_listed(runs)})")
    if dated:
        return FileNotFoundError(f"no event files in the given date range under {destination}")
    return FileNotFoundError(f"no asynctrack event files under {destination}")  # pragma: no cover


def find_event_files(
    destination: str | os.PathLike[str],
    experiment_name: str | None = None,
    run_name: str | None = None,
    *,
    since: str | datetime.date | None = None,
    until: str | datetime.date | None = None,
    **s3_options: Any,
) -> EventFiles:
    """List the event files of the selected partitions, listing no others.

    Raises:
        FileNotFoundError: nothing matches; the message says which of the
            directory, the experiment or the run was not found, and what is there.
        ImportError: an ``s3://`` destination without the ``s3`` extra.
        ValueError: a name is ``""`` (``None`` is every experiment or run).
    """
    check_names(experiment_name, run_name)
    experiment = safe_segment(experiment_name) if experiment_name is not None else None
    run = safe_segment(run_name) if run_name is not None else None
    first, last = _as_date(since), _as_date(until)
    name = os.fspath(destination)
    if scheme_of(name) == "s3":
        try:
            from .._sinks._s3 import list_keys
        except ImportError as exc:
            raise ImportError(
                f"reading {name} needs the s3 extra (aiobotocore): pip install 'asynctrack[s3]'"
            ) from exc
        base = name.rstrip("/")
        keys, storage_options = list_keys(base, _prefixes(experiment, run), **s3_options)
        uri_base = base + "/"
    else:
        if s3_options:
            raise ValueError(f"S3 options {sorted(s3_options)} given for a local destination")
        root = Path(name).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {name}")
        keys, storage_options = _local_keys(root, experiment, run), {}
        uri_base = f"{root.absolute()}{os.sep}"
    selected, partitions = _select(keys, run, first, last)
    if not selected:
        everything = partitions
        if experiment is not None or run is not None:
            # Only on the error path: list everything, to say what is there instead.
            try:
                everything = set(find_event_files(destination, **s3_options).partitions)
            except FileNotFoundError:
                everything = set()
        dated = first is not None or last is not None
        raise _not_found(name, experiment_name, run_name, everything, dated)
    return EventFiles(
        uris=tuple(uri_base + key for key in selected),
        storage_options=storage_options,
        partitions=frozenset(partitions),
    )


def scan(
    destination: str | os.PathLike[str],
    experiment_name: str | None = None,
    run_name: str | None = None,
    *,
    since: str | datetime.date | None = None,
    until: str | datetime.date | None = None,
    **s3_options: Any,
) -> pl.LazyFrame:
    """A lazy Polars ``LazyFrame`` over the events, pruned to the selected partitions.

    Listing happens now; reading happens when the frame is collected, and only
    the selected files are read. Needs the ``polars`` extra (and ``s3`` for S3).

    Args:
        destination: a directory or ``s3://bucket/prefix``.
        experiment_name: only this experiment (its partition alone is listed, and only
            the events whose ``experiment`` field is this name are kept).
        run_name: only this run (likewise).
        since: only files of this UTC date (``"YYYY-MM-DD"`` or a ``date``) or later.
        until: only files of this UTC date or earlier.
        **s3_options: as for the tracker: ``endpoint_url``, ``region_name``,
            ``profile``, ``session``. The credentials are resolved as the tracker
            resolves them and handed to Polars.

    Returns:
        Columns ``seq``, ``ts`` (epoch seconds), ``kind``, ``experiment``, ``run``,
        ``tracker``, ``run_id``, ``parent_run_id``, ``name``, ``tags`` (list of
        strings), ``metadata`` and ``data`` (JSON text), ``duration`` (seconds),
        and ``date`` (the partition's date), in no particular order. A line that is not
        an event (a file cut short or damaged) is skipped when the frame is
        collected, with a warning naming the file and how many.

    Raises:
        FileNotFoundError: the directory, experiment or run does not exist, or
            has no event files (the message says which).
        ImportError: the ``polars`` extra (or ``s3`` for S3) is not installed.
        ValueError: a name is ``""`` (``None`` is every experiment or run).
    """
    try:
        import polars as pl
    except ImportError as exc:
        raise ImportError("asynctrack.scan() needs polars: pip install 'asynctrack[polars]'") from exc
    files = find_event_files(destination, experiment_name, run_name, since=since, until=until, **s3_options)
    # Each line is read whole, as text: the CSV reader with a separator and no quote
    # character JSON never leaves raw in a line (orjson escapes control characters).
    # Polars' NDJSON reader cannot keep ``data`` as valid JSON text (it re-serializes
    # objects without escaping backslashes), and a struct column cannot hold payloads
    # whose shape differs per event; ``json_path_match`` returns an object's own text.
    options = files.storage_options or None
    lines = pl.scan_csv(
        list(files.uris),
        has_header=False,
        separator="\x01",
        quote_char=None,
        schema={"line": pl.String},
        # A damaged line (not the tracker's: see below) must not fail the whole collect.
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
        storage_options=options,
        # The credentials are resolved already (as the tracker resolves them): Polars then
        # needs no Python credential provider, which it would call from its own Rust
        # (tokio) threads, and a process can die of a segfault in such a thread, inside
        # the interpreter (PyCode_Addr2Line), after S3 scans; without a provider, Polars
        # makes no such calls for credentials.
        credential_provider=None if options and "aws_access_key_id" in options else "auto",
        include_file_paths="_path",
        glob=False,
    ).filter(pl.col("line").is_not_null())
    line = pl.col("line")
    # Every event has a ``data`` object. A line that is not an event (a file cut short,
    # copied or synced in part: the tracker's own writes are whole) has none: ``json_path_match``
    # gives null where ``json_decode`` would fail the whole collect. Such a line is skipped,
    # each file named once in a warning; ``data`` is parsed once, for both.
    lines = lines.with_columns(line.str.json_path_match("$.data").alias("data"))
    # An event's envelope has its fields of their types (read_events' is_event): the
    # tracker's lines start with them in its order, which one pattern checks; any other
    # line (a redact hook's reordered fields, not the tracker's) is checked in Python, and
    # then read as orjson writes it back (numbers Polars reads; json_decode would fail the
    # whole collect on a field of another type).
    tracker_line = line.str.contains(_TRACKER_LINE)
    other = pl.col("data").is_not_null() & ~tracker_line
    checked = pl.when(other).then(line).map_batches(_checked, return_dtype=pl.String, is_elementwise=True)
    lines = lines.with_columns(pl.when(tracker_line).then(line).otherwise(checked).alias("line"))
    unreadable = pl.when(pl.col("data").is_null() | line.is_null()).then(pl.col("_path"))
    lines = lines.filter(unreadable.map_batches(_readable, return_dtype=pl.Boolean))
    frame = lines.select(
        line.str.json_decode(_envelope()).struct.unnest(),
        line.str.json_path_match("$.metadata").alias("metadata"),
        pl.col("data"),
        pl.col("_path").str.extract(r"/date=(\d{4}-\d{2}-\d{2})/", 1).str.to_date("%Y-%m-%d").alias("date"),
    )
    # A partition is chosen by its directory; the events' own fields say whose they are
    # (names that differ only in case share a directory on a case-insensitive file system).
    for column, name in names_asked(experiment_name, run_name).items():
        frame = frame.filter(pl.col(column).fill_null(name) == name)
    return frame
