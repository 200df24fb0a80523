"""Events → what a person looks at: run summaries and span trees.

One span per LangChain run (``run_id``): its start event opens it, its end or
error event closes it, and ``parent_run_id`` nests it. Events that are not a
start or an end (agent actions, text, streamed tokens, retries, custom events)
are notes on the span they belong to. A span whose parent was never recorded (a
legacy chain that handed the tracker to its model but not to itself) is nested
under the innermost span that encloses it in time, and marked so, when only one
root run does; otherwise it becomes a root, so nothing is hidden. A span whose
start was lost (dropped, or written by a process that died) is rebuilt from its
end event.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from .._events._schema import GRAPH_KINDS, INTERRUPT_TYPES, id_text
from .._events._schema import is_interrupt as interrupted

__all__ = [
    "INTERRUPT_TYPES",
    "Note",
    "RunOverview",
    "Span",
    "build_tree",
    "is_interrupt",
    "note_summary",
    "preview",
    "scan_run_summaries",
    "summarize_runs",
    "token_counts",
    "token_usage",
    "usage_counts",
]

_OPEN: Final = frozenset({"chain_start", "llm_start", "chat_model_start", "tool_start", "retriever_start"})
_INPUT_FIELDS: Final = ("inputs", "messages", "prompts", "input_str", "query")
_OUTPUT_FIELDS: Final = ("outputs", "response", "output", "documents")
_MODEL_KEYS: Final = ("model_name", "model", "model_id", "deployment_name")


# isinstance() against the Mapping ABC runs Python code; the dicts of parsed JSON pass on dict.
_MAPPING: Final = (dict, Mapping)


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_counts(usage: Any) -> tuple[int, int] | None:
    """Tokens in and out of one usage mapping (OpenAI's ``token_usage`` or LangChain's
    ``usage_metadata``), if it has any: OpenAI's names first, then LangChain's."""
    if type(usage) is not dict and (usage is None or not isinstance(usage, Mapping)):
        return None
    get = usage.get
    return token_counts(
        get("prompt_tokens"), get("input_tokens"), get("completion_tokens"), get("output_tokens")
    )


def token_counts(prompt: Any, inputs: Any, completion: Any, outputs: Any) -> tuple[int, int] | None:
    """``usage_counts`` of a usage's four counts (``prompt_tokens``, ``input_tokens``,
    ``completion_tokens``, ``output_tokens``), however they were read."""
    if type(prompt) is not int or not prompt:
        prompt = inputs if prompt is None and type(inputs) is int else _as_int(prompt) or _as_int(inputs) or 0
    if type(completion) is not int or not completion:
        completion = (
            outputs
            if completion is None and type(outputs) is int
            else _as_int(completion) or _as_int(outputs) or 0
        )
    return (prompt, completion) if prompt or completion else None


def token_usage(data: Any) -> tuple[int, int] | None:
    """Tokens in and out of one ``llm_end`` event's ``data``, if it reports them.

    OpenAI-style ``llm_output.token_usage`` first (the whole call), else the sum
    of the messages' LangChain ``usage_metadata`` (chat models), as the run
    parameters count them.
    """
    response = data.get("response") if isinstance(data, _MAPPING) else None
    if not isinstance(response, _MAPPING):
        return None
    llm_output = response.get("llm_output")
    if isinstance(llm_output, _MAPPING) and (found := usage_counts(llm_output.get("token_usage"))):
        return found
    total_in = total_out = 0
    for generations in response.get("generations") or ():
        for generation in generations or ():
            message = generation.get("message") if isinstance(generation, _MAPPING) else None
            if isinstance(message, _MAPPING):
                usage = message.get("usage_metadata")
                if usage is None and isinstance(message.get("kwargs"), _MAPPING):
                    usage = message["kwargs"].get("usage_metadata")  # a serialized message
                if found := usage_counts(usage):
                    total_in += found[0]
                    total_out += found[1]
    return (total_in, total_out) if total_in or total_out else None


def _model(data: Mapping[str, Any], metadata: Any) -> str | None:
    params = data.get("invocation_params")
    if isinstance(params, Mapping):
        for key in _MODEL_KEYS:
            if isinstance(params.get(key), str):
                return str(params[key])
    if isinstance(metadata, Mapping) and isinstance(metadata.get("ls_model_name"), str):
        return str(metadata["ls_model_name"])
    return None


@dataclasses.dataclass(slots=True, kw_only=True)
class Note:
    """An event inside a span that is neither its start nor its end."""

    kind: str
    ts: float
    data: dict[str, Any]
    #: A LangGraph resume's: when the graph paused at the checkpoint it resumed from (its
    #: interrupt, in these events), if seen.
    paused_at: float | None = None


@dataclasses.dataclass(slots=True, kw_only=True)
class Span:
    """One LangChain run: a chain, model call, tool, retriever, ... and its children."""

    run_id: str
    parent_run_id: str | None
    kind: str  # chain, llm, chat_model, tool, retriever, or the event kind of a lone event
    name: str
    start: float
    end: float | None = None
    status: str = "running"  # ok, error, or running (no end event recorded)
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    streamed_tokens: int = 0
    inputs: Any = None
    outputs: Any = None
    error: Any = None
    tags: list[str] = dataclasses.field(default_factory=list)
    #: The parent run was not recorded; the span is nested under the innermost
    #: recorded span that encloses it in time (see ``build_tree``).
    placed_by_time: bool = False
    notes: list[Note] = dataclasses.field(default_factory=list)
    children: list[Span] = dataclasses.field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or ``None`` while no end was recorded."""
        return None if self.end is None else max(self.end - self.start, 0.0)


def _text(value: Any) -> str:
    """A value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def preview(value: Any) -> str:
    """The part of an input or output a person reads first, as text.

    A one-key dict shows its value; a single prompt its text; chat messages the
    last message's content; a model's response its first generated text.
    """
    if isinstance(value, dict):
        if "generations" in value:  # an LLMResult
            for generations in value.get("generations") or ():
                for generation in generations or ():
                    if isinstance(generation, dict):
                        message = generation.get("message")
                        if isinstance(message, dict) and message.get("content"):
                            return preview(message["content"])
                        if generation.get("text"):
                            return str(generation["text"])
        if len(value) == 1:
            return preview(next(iter(value.values())))
    if isinstance(value, list) and value:
        last = value[-1]
        if isinstance(last, list) and last:  # chat messages: one list per prompt
            last = last[-1]
        if isinstance(last, dict) and "content" in last:
            return preview(last["content"])
        if isinstance(last, str) and len(value) == 1:
            return last
    return _text(value)


def note_summary(note: Note) -> str:
    """One line for an agent action, agent finish, text or other note."""
    data = note.data
    if note.kind == "agent_action":
        action = data.get("action")
        action = action if isinstance(action, dict) else {}
        return f"action {action.get('tool')}({preview(action.get('tool_input'))})"
    if note.kind == "agent_finish":
        finish = data.get("finish")
        finish = finish if isinstance(finish, dict) else {}
        return f"finish {preview(finish.get('return_values'))}"
    if note.kind == "text":
        return f"text {preview(data.get('text'))}"
    if note.kind == "graph_interrupt":
        interrupts = data.get("interrupts")
        values = [i.get("value") if isinstance(i, dict) else i for i in interrupts or ()]
        return f"interrupt {preview(values[0] if len(values) == 1 else values)}"
    if note.kind == "graph_resume":
        line = f"resume from checkpoint {data.get('checkpoint_id')}"
        if note.paused_at is not None:
            paused = datetime.datetime.fromtimestamp(note.paused_at, datetime.UTC)
            line += f" (paused there at {paused:%H:%M:%S} UTC)"
        return line
    return f"{note.kind} {_text(data)}"


def is_interrupt(data: Any) -> bool:
    """Whether an error event's ``data`` is LangGraph pausing a graph for a human (a node
    raises ``GraphInterrupt``): control flow, not a failure."""
    return isinstance(data, dict) and interrupted(data.get("error"))


def _first(data: Mapping[str, Any], fields: tuple[str, ...]) -> Any:
    for field in fields:
        if field in data and data[field] is not None:
            return data[field]
    return None


def _open(event: Mapping[str, Any], kind: str, ts: float) -> Span:
    """A span from its first event: normally the start, else an end whose start is lost."""
    base = kind.rsplit("_", 1)[0] if kind in _OPEN or kind.endswith(("_end", "_error")) else "chain"
    duration = event.get("duration")
    parent = event.get("parent_run_id")
    return Span(
        run_id=str(event.get("run_id")),
        parent_run_id=parent if isinstance(parent, str) else None,
        kind=base,
        name=str(event.get("name") or base),
        start=ts - float(duration) if isinstance(duration, int | float) else ts,
    )


def _apply(span: Span, event: Mapping[str, Any], kind: str, ts: float, data: dict[str, Any]) -> None:
    if kind in _OPEN:
        span.start = ts
        span.kind = kind.rsplit("_", 1)[0]
        span.name = str(event.get("name") or span.name)
        span.inputs = _first(data, _INPUT_FIELDS)
        span.model = _model(data, event.get("metadata"))
        tags = event.get("tags")
        span.tags = [str(tag) for tag in tags] if isinstance(tags, list) else []
    elif kind.endswith("_end"):
        span.end = ts
        span.status = "interrupted" if span.status == "interrupted" else "ok"
        span.outputs = _first(data, _OUTPUT_FIELDS)
        if kind == "llm_end" and (usage := token_usage(data)):
            span.tokens_in, span.tokens_out = usage
    elif kind.endswith("_error"):
        span.end = ts
        span.status = "interrupted" if is_interrupt(data) else "error"
        span.error = data.get("error")
    elif kind == "llm_new_token":
        span.streamed_tokens += 1
    elif kind == "graph_interrupt":  # LangGraph paused the graph for a human
        span.status = "error" if span.status == "error" else "interrupted"
        span.notes.append(Note(kind=kind, ts=ts, data=data))
    else:
        span.notes.append(Note(kind=kind, ts=ts, data=data))


def build_tree(events: Iterable[Mapping[str, Any]]) -> list[Span]:
    """The spans of ``events`` (one run's, in ``read_events()`` order), as trees.

    Returns:
        The root spans, by start time; children are sorted by start time too.
    """
    spans: dict[str, Span] = {}
    loose: list[Span] = []  # events without a run_id: a span of their own each
    paused: dict[Any, float] = {}  # a LangGraph checkpoint a graph paused at -> when
    for event in events:
        kind = str(event.get("kind") or "")
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        ts = float(event.get("ts") or 0.0)
        run_id = event.get("run_id")
        if not isinstance(run_id, str):
            lone = Span(run_id="", parent_run_id=None, kind=kind, name=kind, start=ts, end=ts, status="ok")
            lone.notes.append(Note(kind=kind, ts=ts, data=data))
            loose.append(lone)
            continue
        span = spans.get(run_id)
        if span is None:
            span = spans[run_id] = _open(event, kind, ts)
        _apply(span, event, kind, ts, data)
        if kind in GRAPH_KINDS and isinstance(data.get("checkpoint_id"), str):
            if kind == "graph_interrupt":
                paused[data["checkpoint_id"]] = ts
            else:
                span.notes[-1].paused_at = paused.get(data["checkpoint_id"])
    return _nest(spans, loose)


def _nest(spans: dict[str, Span], loose: list[Span]) -> list[Span]:
    roots: list[Span] = []
    orphans: list[Span] = []
    for span in spans.values():
        parent = spans.get(span.parent_run_id) if span.parent_run_id else None
        if parent is not None:
            parent.children.append(span)
        elif span.parent_run_id is None:
            roots.append(span)
        else:
            orphans.append(span)
    for orphan in orphans:
        home = _enclosing(roots, orphan)
        if home is None:
            roots.append(orphan)
        else:
            orphan.placed_by_time = True
            home.children.append(orphan)
    for span in spans.values():
        span.children.sort(key=lambda child: child.start)
    roots.extend(loose)
    roots.sort(key=lambda span: span.start)
    return roots


def _encloses(outer: Span, inner: Span) -> bool:
    end = inner.end if inner.end is not None else inner.start
    return outer.end is not None and outer.start <= inner.start and end <= outer.end


def _enclosing(roots: list[Span], orphan: Span) -> Span | None:
    """The innermost span enclosing ``orphan`` in time, if only one root tree does.

    A span whose parent run was not recorded (a legacy chain that passed the
    tracker to its model but not to itself) would otherwise float at the top,
    away from the agent step it belongs to. Only an unambiguous time window is
    used: with two root runs overlapping (concurrent requests) it stays a root.
    """
    candidates = [root for root in roots if _encloses(root, orphan)]
    if len(candidates) != 1:
        return None
    home = candidates[0]
    while True:
        inner = [child for child in home.children if _encloses(child, orphan)]
        if len(inner) != 1:
            return home
        home = inner[0]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunOverview:
    """One row of ``asynctrack runs``: a run's counts from its events."""

    experiment: str
    run: str
    events: int
    errors: int
    llm_calls: int
    tokens_in: int
    tokens_out: int
    first_event: float
    last_event: float
    #: The sessions (metadata ``session_id``, else LangGraph's ``thread_id``) and users
    #: (``user_id``) of the run's LangChain runs, sorted.
    sessions: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Wall seconds from the first event to the last."""
        return self.last_event - self.first_event

    def as_dict(self) -> dict[str, Any]:
        """The row for ``--json``: the fields and ``duration``."""
        return {**dataclasses.asdict(self), "duration": self.duration}


_LLM_CALLS: Final = ("llm_start", "chat_model_start")


@dataclasses.dataclass(slots=True)
class _Totals:
    """A run's counts while they are added up (from events, or from Polars' groups)."""

    events: int = 0
    errors: int = 0
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    first: float = math.inf
    last: float = -math.inf
    sessions: set[str] = dataclasses.field(default_factory=set)
    users: set[str] = dataclasses.field(default_factory=set)

    def add_usage(self, data: Any) -> None:
        """Add the token usage of an ``llm_end`` event's ``data``."""
        if usage := token_usage(data):
            self.tokens_in += usage[0]
            self.tokens_out += usage[1]


def _overviews(totals: Mapping[tuple[str, str], _Totals]) -> list[RunOverview]:
    """The rows, newest (latest last event) first."""
    rows = [
        RunOverview(
            experiment=experiment,
            run=run,
            events=t.events,
            errors=t.errors,
            llm_calls=t.llm_calls,
            tokens_in=t.tokens_in,
            tokens_out=t.tokens_out,
            first_event=t.first,
            last_event=t.last,
            sessions=tuple(sorted(t.sessions)),
            users=tuple(sorted(t.users)),
        )
        for (experiment, run), t in totals.items()
    ]
    rows.sort(key=lambda row: (row.last_event, row.experiment, row.run), reverse=True)
    return rows


def people(metadata: Any) -> tuple[str | None, str | None]:
    """A run's session (``session_id``, else LangGraph's ``thread_id``) and user (``user_id``)."""
    if not isinstance(metadata, Mapping) or not metadata:
        return None, None
    session = id_text(metadata.get("session_id")) or id_text(metadata.get("thread_id"))
    return session, id_text(metadata.get("user_id"))


def summarize_runs(
    events: Iterable[Mapping[str, Any]], *, session: str | None = None, user: str | None = None
) -> list[RunOverview]:
    """One overview per (experiment, run), newest (latest last event) first.

    Args:
        events: the recorded events.
        session: count only the events of LangChain runs of this session (their start's
            metadata says it).
        user: likewise, of this user.
    """
    filtered = session is not None or user is not None
    of_run: dict[Any, tuple[str | None, str | None]] = {}
    if filtered:
        events = list(events)
        for event in events:
            if str(event.get("kind")).endswith("_start"):
                found = people(event.get("metadata"))
                if found != (None, None):
                    of_run.setdefault(event.get("run_id"), found)
    totals: dict[tuple[str, str], _Totals] = {}
    for event in events:
        if filtered:
            run_session, run_user = of_run.get(event.get("run_id"), (None, None))
            if session not in (None, run_session) or user not in (None, run_user):
                continue
        metadata = event.get("metadata")
        found = people(metadata) if metadata else (None, None)
        key = (str(event.get("experiment")), str(event.get("run")))
        t = totals.get(key) or totals.setdefault(key, _Totals())
        ts = float(event.get("ts") or 0.0)
        kind = str(event.get("kind"))
        t.events += 1
        t.errors += kind.endswith("_error") and not is_interrupt(event.get("data"))
        t.llm_calls += kind in _LLM_CALLS
        if kind == "llm_end":
            t.add_usage(event.get("data"))
        if kind.endswith("_start"):
            if found[0] is not None:
                t.sessions.add(found[0])
            if found[1] is not None:
                t.users.add(found[1])
        t.first = min(t.first, ts)
        t.last = max(t.last, ts)
    return _overviews(totals)


_PEOPLE_KEYS: Final = ("session_id", "thread_id", "user_id")
#: The text json_path_match gives for a bool, a float, an object or an array (and for a
#: string that reads as one).
_NOT_AN_ID: Final = r"^(?:true|false|[\[{].*|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)$"


def _not_an_id(text: Any) -> Any:
    import polars as pl

    value: pl.Expr = text
    return value.str.contains(_NOT_AN_ID).fill_null(False) & ~value.str.contains(r"^-?[0-9]+$")


def _people_of(index: int) -> Any:
    """A function of a metadata column (null but where needed) to ``people()[index]``."""
    import polars as pl

    def of(metadata: pl.Series) -> pl.Series:
        return metadata.map_elements(
            lambda text: people(orjson.loads(text))[index], return_dtype=pl.String, skip_nulls=True
        )

    return of


def scan_run_summaries(
    destination: str | os.PathLike[str],
    experiment_name: str | None = None,
    *,
    session: str | None = None,
    user: str | None = None,
    **s3_options: Any,
) -> list[RunOverview]:
    """``summarize_runs`` over ``scan()``: Polars counts, only ``llm_end`` payloads parsed.

    Memory stays bounded by the aggregates and the model responses, not by every
    event, which is what ``asynctrack runs`` needs on a large destination.

    Raises:
        FileNotFoundError: as ``scan()``.
        ImportError: without the ``polars`` extra.
    """
    import polars as pl

    from ._scan import scan

    frame = scan(destination, experiment_name, **s3_options)
    keys = ("experiment", "run")
    metadata = pl.col("metadata")
    session_id, thread_id, user_id = (metadata.str.json_path_match(f"$.{key}") for key in _PEOPLE_KEYS)
    start = pl.col("kind").str.ends_with("_start")
    # json_path_match gives a string's text, and the JSON of anything else: an id that is
    # neither a string nor an integer (a bool, a float, an object) is no id for people();
    # where the text could be one, people() decides, in Python, for those rows only.
    odd_session = start & (_not_an_id(session_id) | _not_an_id(thread_id))
    odd_user = start & _not_an_id(user_id)
    frame = frame.with_columns(
        pl.when(odd_session)
        .then(pl.when(odd_session).then(metadata).map_batches(_people_of(0), pl.String, is_elementwise=True))
        .when(start)
        .then(pl.coalesce(session_id.replace("", None), thread_id.replace("", None)))
        .alias("session"),
        pl.when(odd_user)
        .then(pl.when(odd_user).then(metadata).map_batches(_people_of(1), pl.String, is_elementwise=True))
        .when(start)
        .then(user_id.replace("", None))
        .alias("user"),
    )
    if session is not None or user is not None:
        of_run = (
            frame.filter(pl.col("session").is_not_null() | pl.col("user").is_not_null())
            .group_by("run_id")
            .agg(pl.col("session").first().alias("run_session"), pl.col("user").first().alias("run_user"))
        )
        frame = frame.join(of_run, on="run_id", how="inner")
        if session is not None:
            frame = frame.filter(pl.col("run_session") == session)
        if user is not None:
            frame = frame.filter(pl.col("run_user") == user)
    counts, ends = pl.collect_all(
        [
            frame.group_by(keys).agg(
                pl.len().alias("events"),
                # is_interrupt(): the error's own type, read on the error events only.
                (
                    ~pl.col("data")
                    .filter(pl.col("kind").str.ends_with("_error"))
                    .str.json_path_match("$.error.type")
                    .is_in(list(INTERRUPT_TYPES))
                    .fill_null(False)
                )
                .sum()
                .alias("errors"),
                pl.col("kind").is_in(list(_LLM_CALLS)).sum().alias("llm_calls"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
                pl.col("session").drop_nulls().unique().alias("sessions"),
                pl.col("user").drop_nulls().unique().alias("users"),
            ),
            frame.filter(pl.col("kind") == "llm_end").select(*keys, "data"),
        ]
    )
    totals = {
        (str(row["experiment"]), str(row["run"])): _Totals(
            events=row["events"],
            errors=row["errors"],
            llm_calls=row["llm_calls"],
            first=row["first"],
            last=row["last"],
            sessions=set(row["sessions"] or ()),
            users=set(row["users"] or ()),
        )
        for row in counts.iter_rows(named=True)
    }
    for experiment, run, data in ends.iter_rows():
        if data is not None:
            totals[(str(experiment), str(run))].add_usage(orjson.loads(data))
    return _overviews(totals)
