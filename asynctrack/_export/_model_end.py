"""A model call's end line (``llm_end``) read by a schema: only what its span needs.

When content is not captured, an ``llm_end`` span needs a few values of its line: the run
id and time, and from the response the usage, the finish reasons, the response id and
model. orjson builds every object of the line (its messages, tool calls, both copies of
the token usage): ~50k instructions a ChatOpenAI end, most of it objects built and freed.
msgspec's decoder, given the fields below, validates the whole line as JSON but builds
only these fields (55-59% of orjson's instructions on ChatOpenAI ends), so the rule is
simple: the same line gives the same values as a whole parse, and a line whose shape is
not this schema's (a field of another type, a generation or a usage that is not an object)
is not read here at all (``read`` returns ``None``): the caller parses it whole. The usage
mappings are read as the few counts ``usage_counts`` takes from them (``_Usage``), not
built whole.

``model_end`` is ``_semconv.llm_end`` (content not captured) on these objects: the same
walk of the generations, the same fallbacks, the same attributes (``end_attributes``).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from .._read._tree import token_counts
from ._semconv import Ended, end_attributes

__all__ = ["EndLine", "decode", "model_end", "number", "read", "seconds"]

# gc=False: these objects hold no cycles, and are freed as soon as the span is written.


class _Info(msgspec.Struct, gc=False):
    finish_reason: Any = None


class _Metadata(msgspec.Struct, gc=False):
    finish_reason: Any = None
    id: Any = None
    model_name: Any = None
    model: Any = None


class _Details(msgspec.Struct, gc=False):
    cache_read: Any = None


class _Usage(msgspec.Struct, gc=False):
    """A usage mapping (``token_usage``, ``usage_metadata``): the counts ``usage_counts`` reads."""

    prompt_tokens: Any = None
    input_tokens: Any = None
    completion_tokens: Any = None
    output_tokens: Any = None
    input_token_details: _Details | None = None


class _Kwargs(msgspec.Struct, gc=False):
    usage_metadata: _Usage | None = None


class _Message(msgspec.Struct, gc=False):
    response_metadata: _Metadata | None = None
    usage_metadata: _Usage | None = None
    kwargs: _Kwargs | None = None  # a serialized message: its usage_metadata is in kwargs


class _Generation(msgspec.Struct, gc=False):
    generation_info: _Info | None = None
    message: _Message | None = None


class _Output(msgspec.Struct, gc=False):
    token_usage: _Usage | None = None
    model_name: Any = None
    id: Any = None


class _Response(msgspec.Struct, gc=False):
    generations: list[list[_Generation]] | None = None
    llm_output: _Output | None = None


class _Data(msgspec.Struct, gc=False):
    response: _Response


class EndLine(msgspec.Struct, gc=False):
    """The fields of an ``llm_end`` line that its span needs."""

    kind: Literal["llm_end"]  # checked, not built: a line of another kind is not read here
    run_id: str
    ts: Any
    data: _Data


decode: Final = msgspec.json.Decoder(EndLine).decode  # read() of an ASCII line, but its errors raised
number: Final = msgspec.json.Decoder(float).decode  # seconds(), but a DecodeError for float()'s cases
_DECODE: Final = decode
_SECONDS: Final = number


def seconds(text: bytes) -> float:
    """``float(text)``: a JSON number read by msgspec (a fifth of ``float()``'s instructions
    on a time's 17 digits; both round correctly), anything else by ``float()``."""
    try:
        return _SECONDS(text)
    except msgspec.DecodeError:
        return float(text)


def read(line: bytes) -> EndLine | None:
    """The line's fields, or ``None`` if it is not JSON of this schema's shape, or not
    UTF-8 (orjson refuses such a line; msgspec checks only the strings it decodes)."""
    if not line.isascii():
        try:
            line.decode()
        except UnicodeDecodeError:
            return None
    try:
        return _DECODE(line)
    except msgspec.DecodeError:  # ValidationError too: parse it whole
        return None


_BEYOND: Final = 63  # (a | b) >> _BEYOND is 0 for counts a, b in [0, 2**63) alone


def model_end(response: _Response, attrs: list[bytes]) -> Ended | None:
    """``_semconv.llm_end(data, capture=False)`` of the response read by ``read``, its
    attributes appended to ``attrs``; ``None`` (``attrs`` untouched): parse the line whole.

    The line is parsed whole when a count is beyond what orjson reads as this int (it
    reads integers beyond 64 bits as floats, msgspec as ints), or negative: counts are
    checked as ``(a | b) >> 63`` (one operation, 0 only for counts in [0, 2**63)); a
    negative count is no usage a model reports, and the whole parse reads it right.
    """
    llm_output = response.llm_output
    usage = None
    if llm_output is not None:
        found = llm_output.token_usage
        if found is not None:
            usage = token_counts(
                found.prompt_tokens, found.input_tokens, found.completion_tokens, found.output_tokens
            )
    total_in = total_out = 0
    message: _Message | None = None  # the first generation's
    reasons: list[str] = []
    for generations in response.generations or ():
        for generation in generations:
            gen_message = generation.message
            if gen_message is not None:
                if message is None:
                    message = gen_message
                if usage is None:
                    found = gen_message.usage_metadata
                    if found is None and gen_message.kwargs is not None:
                        found = gen_message.kwargs.usage_metadata  # a serialized message
                    if found is not None:
                        counts = token_counts(
                            found.prompt_tokens,
                            found.input_tokens,
                            found.completion_tokens,
                            found.output_tokens,
                        )
                        if counts is not None:
                            if (counts[0] | counts[1]) >> _BEYOND:
                                return None
                            total_in += counts[0]
                            total_out += counts[1]
            info = generation.generation_info
            reason = info.finish_reason if info is not None else None
            if reason is None and gen_message is not None and gen_message.response_metadata is not None:
                reason = gen_message.response_metadata.finish_reason
            if type(reason) is str:
                reasons.append(reason)
    if usage is None:
        if total_in or total_out:
            usage = (total_in, total_out)
    elif (usage[0] | usage[1]) >> _BEYOND:
        return None
    cached = None
    if message is not None:
        usage_metadata = message.usage_metadata
        if usage_metadata is not None and usage_metadata.input_token_details is not None:
            cached = usage_metadata.input_token_details.cache_read
            if type(cached) is int and cached >> _BEYOND:
                return None
        metadata = message.response_metadata
    else:
        metadata = None
    if llm_output is not None:
        response_id, model = llm_output.id, llm_output.model_name
    else:
        response_id = model = None
    if metadata is not None:
        response_id = response_id or metadata.id
        model = model or metadata.model_name or metadata.model
    return end_attributes(attrs, response_id, model, reasons, usage, cached)
