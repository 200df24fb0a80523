"""LangChain runs in the OpenTelemetry GenAI semantic conventions, version 1.41.0.

The conventions are in development; this module writes the attributes, span names and
kinds of semantic conventions **1.41.0** (``SCHEMA_URL``), the ``gen_ai_latest_experimental``
shape of that release: ``gen_ai.provider.name`` (not the older ``gen_ai.system``), messages
as JSON text in ``gen_ai.input.messages`` / ``gen_ai.output.messages``. One version only,
so ``OTEL_SEMCONV_STABILITY_OPT_IN`` changes nothing.

How a run maps (``describe_start``):

=====================  ==========================  ====================================  ========
run                    ``gen_ai.operation.name``   span name                             kind
=====================  ==========================  ====================================  ========
chat model             ``chat``                    ``chat {gen_ai.request.model}``       CLIENT
LLM (text in)          ``text_completion``         ``text_completion {model}``           CLIENT
tool                   ``execute_tool``            ``execute_tool {gen_ai.tool.name}``   INTERNAL
retriever              ``retrieval``               ``retrieval {name}``                  CLIENT
agent (executor)       ``invoke_agent``            ``invoke_agent {gen_ai.agent.name}``  INTERNAL
root chain, graph      ``invoke_workflow``         ``invoke_workflow {name}``            INTERNAL
nested chain           (none: a framework step)    the run's name                        INTERNAL
=====================  ==========================  ====================================  ========

Chain spans (workflows and framework steps) also carry ``openinference.span.kind =
"CHAIN"``, the one kind the GenAI attributes cannot tell an OpenInference receiver.

Content (messages, tool arguments and results, chain inputs and outputs) is written only
when the exporter's ``capture_content`` is on; it is the recorded line's text, redacted
as the files are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from .._read._tree import usage_counts
from ._protobuf import KIND_CLIENT, KIND_INTERNAL, common_span_attribute, span_attribute

__all__ = [
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "Described",
    "describe_end",
    "describe_start",
    "llm_end",
]

SEMCONV_VERSION: Final = "1.41.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

#: Content attributes longer than this are cut (a receiver refuses requests of a few MiB).
MAX_CONTENT_BYTES: Final = 128 * 1024

# LangChain's ls_provider -> the conventions' gen_ai.provider.name (well-known values).
_PROVIDERS: Final = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic",
    "amazon_bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "google_genai": "gcp.gen_ai",
    "google_vertexai": "gcp.vertex_ai",
    "google_anthropic_vertex": "gcp.vertex_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "ibm": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
}
_MODEL_KEYS: Final = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")
# invocation_params key -> attribute, numbers only.
_REQUEST_NUMBERS: Final = (
    ("temperature", "gen_ai.request.temperature", float),
    ("top_p", "gen_ai.request.top_p", float),
    ("top_k", "gen_ai.request.top_k", float),
    ("frequency_penalty", "gen_ai.request.frequency_penalty", float),
    ("presence_penalty", "gen_ai.request.presence_penalty", float),
    ("max_tokens", "gen_ai.request.max_tokens", int),
    ("max_completion_tokens", "gen_ai.request.max_tokens", int),
    ("max_output_tokens", "gen_ai.request.max_tokens", int),
    ("max_tokens_to_sample", "gen_ai.request.max_tokens", int),
    ("seed", "gen_ai.request.seed", int),
    ("n", "gen_ai.request.choice.count", int),
)
_ROLES: Final = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}
_AGENT_NAMES: Final = ("AgentExecutor", "agent")
_OPERATION_AGENT: Final = span_attribute("gen_ai.operation.name", "invoke_agent")
_OPERATION_WORKFLOW: Final = span_attribute("gen_ai.operation.name", "invoke_workflow")
# The GenAI conventions have no kind for a chain; OpenInference's receivers (Arize Phoenix,
# which turns the gen_ai.* attributes of model, tool, retriever and agent spans into its
# own kinds) show a chain span without this one as UNKNOWN, the root of every trace too.
_OPENINFERENCE_CHAIN: Final = span_attribute("openinference.span.kind", "CHAIN")


class Described:
    """What a start event says about its span (see ``describe_start``)."""

    __slots__ = ("attributes", "kind", "model", "name", "operation", "provider")

    def __init__(
        self,
        name: str,
        kind: int,
        operation: str | None,
        attributes: list[bytes],
        provider: str | None = None,
        model: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.operation = operation
        self.attributes = attributes
        self.provider = provider  # model calls: gen_ai.provider.name and gen_ai.request.model
        self.model = model


def _number(value: Any, cast: type) -> int | float | None:
    kind = type(value)
    if kind is not int and kind is not float:
        return None  # a bool is neither
    return cast(value)  # type: ignore[no-any-return]  # int() or float() of a number


def _json(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(text) > MAX_CONTENT_BYTES:
        text = f"{text[:MAX_CONTENT_BYTES]}...[asynctrack: truncated, {len(text)} characters in all]"
    return text


def _content(key: str, value: Any) -> bytes:
    return span_attribute(key, _json(value))


def provider_name(data: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """``gen_ai.provider.name``: LangChain's ``ls_provider``, else the class's package."""
    provider = metadata.get("ls_provider")
    if isinstance(provider, str) and provider:
        return _PROVIDERS.get(provider.lower(), provider.lower())
    serialized = data.get("serialized")
    if isinstance(serialized, dict):
        ident = serialized.get("id")
        if isinstance(ident, list) and len(ident) >= 3 and isinstance(ident[2], str):
            return _PROVIDERS.get(ident[2], ident[2])
    return "_OTHER"


def request_model(data: Mapping[str, Any], metadata: Mapping[str, Any]) -> str | None:
    params = data.get("invocation_params")
    if isinstance(params, dict):
        for key in _MODEL_KEYS:
            value = params.get(key)
            if isinstance(value, str) and value:
                return value
    value = metadata.get("ls_model_name")
    return value if isinstance(value, str) and value else None


def _stop_sequences(data: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[str] | None:
    for source in (data.get("invocation_params"), data.get("options"), metadata):
        if isinstance(source, dict):
            stop = source.get("stop", source.get("ls_stop"))
            if isinstance(stop, str):
                return [stop]
            if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
                return list(stop)
    return None


def _model_call(data: Mapping[str, Any], metadata: Mapping[str, Any], chat: bool, capture: bool) -> Described:
    operation = "chat" if chat else "text_completion"
    model = request_model(data, metadata)
    provider = provider_name(data, metadata)
    attrs = [
        common_span_attribute("gen_ai.operation.name", operation),
        common_span_attribute("gen_ai.provider.name", provider),
    ]
    if model is not None:
        attrs.append(common_span_attribute("gen_ai.request.model", model))
    params = data.get("invocation_params")
    if isinstance(params, dict):
        seen = set()
        for key, name, cast in _REQUEST_NUMBERS:
            value = params.get(key)
            if value is None:
                continue
            value = _number(value, cast)
            if value is not None and name not in seen:
                seen.add(name)
                attrs.append(span_attribute(name, value))
        if "gen_ai.request.temperature" not in seen:
            value = _number(metadata.get("ls_temperature"), float)
            if value is not None:
                attrs.append(span_attribute("gen_ai.request.temperature", value))
        if "gen_ai.request.max_tokens" not in seen:
            value = _number(metadata.get("ls_max_tokens"), int)
            if value is not None:
                attrs.append(span_attribute("gen_ai.request.max_tokens", value))
        if capture and isinstance(params.get("tools"), list) and params["tools"]:
            attrs.append(_content("gen_ai.tool.definitions", params["tools"]))
    stop = _stop_sequences(data, metadata)
    if stop:
        attrs.append(span_attribute("gen_ai.request.stop_sequences", stop))
    if capture:
        messages = _input_messages(data)
        if messages:
            attrs.append(_content("gen_ai.input.messages", messages))
    name = f"{operation} {model}" if model else operation
    return Described(name, KIND_CLIENT, operation, attrs, provider, model)


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif isinstance(block, dict):
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    parts.append({"type": "text", "content": block["text"]})
                elif block.get("type") not in ("tool_use", "tool_call"):
                    parts.append({"type": str(block.get("type") or "unknown"), "content": block})
    return parts


def _message(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("kwargs"), dict):  # a serialized message
        message = message["kwargs"]
    role = _ROLES.get(str(message.get("type")), str(message.get("type") or "user"))
    if role == "tool":
        response = {
            "type": "tool_call_response",
            "id": message.get("tool_call_id"),
            "response": message.get("content"),
        }
        return {"role": "tool", "parts": [response]}
    parts = _text_parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            arguments = call.get("args")
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": call.get("name"), "arguments": arguments}
            )
    return {"role": role, "parts": parts}


def _input_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], list):
        return [m for m in map(_message, messages[0]) if m is not None]
    prompts = data.get("prompts")
    if isinstance(prompts, list):
        return [{"role": "user", "parts": _text_parts(p)} for p in prompts if isinstance(p, str)]
    return []


def _tool(name: str, data: Mapping[str, Any], capture: bool) -> Described:
    attrs = [
        common_span_attribute("gen_ai.operation.name", "execute_tool"),
        common_span_attribute("gen_ai.tool.name", name),
        common_span_attribute("gen_ai.tool.type", "function"),
    ]
    serialized = data.get("serialized")
    if isinstance(serialized, dict) and isinstance(serialized.get("description"), str):
        attrs.append(common_span_attribute("gen_ai.tool.description", serialized["description"]))
    call_id = data.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        attrs.append(span_attribute("gen_ai.tool.call.id", call_id))
    if capture:
        arguments = data.get("inputs") or data.get("input_str")
        if arguments is not None:
            attrs.append(_content("gen_ai.tool.call.arguments", arguments))
    return Described(f"execute_tool {name}", KIND_INTERNAL, "execute_tool", attrs)


def describe_start(
    kind: str, name: str, data: Mapping[str, Any], metadata: Mapping[str, Any], *, root: bool, capture: bool
) -> Described:
    """The span name, kind and start attributes of a run from its start event."""
    if kind == "chat_model_start":
        return _model_call(data, metadata, True, capture)
    if kind == "llm_start":
        return _model_call(data, metadata, False, capture)
    if kind == "tool_start":
        return _tool(name, data, capture)
    if kind == "retriever_start":
        attrs = [
            common_span_attribute("gen_ai.operation.name", "retrieval"),
            common_span_attribute("gen_ai.data_source.id", name),
        ]
        if capture and data.get("query") is not None:
            attrs.append(_content("langchain.inputs", data["query"]))
        return Described(f"retrieval {name}", KIND_CLIENT, "retrieval", attrs)
    attrs = []
    if capture and data.get("inputs") is not None:
        attrs.append(_content("langchain.inputs", data["inputs"]))
    if name in _AGENT_NAMES or metadata.get("lc_agent_name"):
        agent = str(metadata.get("lc_agent_name") or name)
        attrs[:0] = [_OPERATION_AGENT, common_span_attribute("gen_ai.agent.name", agent)]
        return Described(f"invoke_agent {agent}", KIND_INTERNAL, "invoke_agent", attrs)
    attrs.append(_OPENINFERENCE_CHAIN)
    if root or name == "LangGraph":
        attrs[:0] = [_OPERATION_WORKFLOW, common_span_attribute("gen_ai.workflow.name", name)]
        return Described(f"invoke_workflow {name}", KIND_INTERNAL, "invoke_workflow", attrs)
    return Described(name, KIND_INTERNAL, None, attrs)


#: What an end event says: its attributes, and for model calls the response model and the
#: tokens in and out (a tuple: made once per span, where a class's instance costs more).
Ended = tuple[list[bytes], str | None, tuple[int, int] | None]


def describe_end(kind: str, data: Mapping[str, Any], *, capture: bool) -> Ended:
    """What an end event adds to its span."""
    if kind == "llm_end":
        return llm_end(data, capture)
    attrs: list[bytes] = []
    if capture:
        if kind == "tool_end" and data.get("output") is not None:
            attrs.append(_content("gen_ai.tool.call.result", _tool_output(data["output"])))
        elif kind == "chain_end" and data.get("outputs") is not None:
            attrs.append(_content("langchain.outputs", data["outputs"]))
        elif kind == "retriever_end" and data.get("documents") is not None:
            attrs.append(_content("langchain.outputs", data["documents"]))
    return attrs, None, None


def llm_end(data: Mapping[str, Any], capture: bool) -> Ended:
    """The response's id, model, finish reasons and usage, in one walk of its generations.

    Usage as ``token_usage()`` counts it: ``llm_output.token_usage``, else the sum of the
    messages' ``usage_metadata``.
    """
    attrs: list[bytes] = []
    response = data.get("response")
    if type(response) is not dict:
        return attrs, None, None
    llm_output = response.get("llm_output")
    if type(llm_output) is not dict:
        llm_output = _EMPTY
    usage = usage_counts(llm_output.get("token_usage"))
    total_in = total_out = 0
    message: dict[str, Any] | None = None  # the first generation's
    reasons: list[str] = []
    outputs: list[dict[str, Any]] = []
    for generations in response.get("generations") or ():
        for generation in generations or ():
            if type(generation) is not dict:
                continue
            gen_message = generation.get("message")
            if type(gen_message) is not dict:
                gen_message = None
            else:
                if message is None:
                    message = gen_message
                if usage is None:
                    found = gen_message.get("usage_metadata")
                    if found is None and type(gen_message.get("kwargs")) is dict:
                        found = gen_message["kwargs"].get("usage_metadata")  # a serialized message
                    found = usage_counts(found)
                    if found is not None:
                        total_in += found[0]
                        total_out += found[1]
            info = generation.get("generation_info")
            reason = info.get("finish_reason") if type(info) is dict else None
            if reason is None and gen_message is not None:
                meta = gen_message.get("response_metadata")
                reason = meta.get("finish_reason") if type(meta) is dict else None
            if type(reason) is str:
                reasons.append(reason)
            if capture:
                outputs.append(_output_message(generation, gen_message, reason))
    if usage is None and (total_in or total_out):
        usage = (total_in, total_out)
    if message is None:
        message = _EMPTY
    metadata = message.get("response_metadata")
    if type(metadata) is not dict:
        metadata = _EMPTY
    response_id = llm_output.get("id") or metadata.get("id")
    model = llm_output.get("model_name") or metadata.get("model_name") or metadata.get("model")
    ended = end_attributes(attrs, response_id, model, reasons, usage, _cached(message.get("usage_metadata")))
    if capture and outputs:
        attrs.append(_content("gen_ai.output.messages", outputs))
    return ended


def _cached(usage_metadata: Any) -> Any:
    """A message's ``usage_metadata.input_token_details.cache_read``, if it is there."""
    details = usage_metadata.get("input_token_details") if type(usage_metadata) is dict else None
    return details.get("cache_read") if type(details) is dict else None


def end_attributes(
    attrs: list[bytes],
    response_id: Any,
    model: Any,
    reasons: list[str],
    usage: tuple[int, int] | None,
    cached: Any,
) -> Ended:
    """A model call's end attributes (appended to ``attrs``) from what its response says:
    ``cached`` is its first message's ``usage_metadata.input_token_details.cache_read``."""
    if type(response_id) is str and response_id:
        try:  # the attribute's head by the id's UTF-8 length, then the id
            data = response_id.encode()
            attrs.append(_RESPONSE_ID_HEADS[len(data)] + data)
        except (UnicodeEncodeError, IndexError):  # a lone surrogate, or a long id
            attrs.append(span_attribute("gen_ai.response.id", response_id))
    # A response model's and finish reasons' attributes are found kept nearly always (a
    # subscript costs less than get(); a miss, once per model or reasons, raises).
    if type(model) is str and model:
        try:
            attrs.append(_RESPONSE_MODELS[model])
        except KeyError:
            attrs.append(_response_model(model))
    else:
        model = None
    if reasons:
        reasons_key = tuple(reasons)
        try:
            attrs.append(_REASONS[reasons_key])
        except KeyError:
            attrs.append(_finish_reasons(reasons_key))
    if usage is not None:
        tokens_in, tokens_out = usage
        attrs.append(
            _INPUT_TOKENS.get(tokens_in) or _count(_INPUT_TOKENS, "gen_ai.usage.input_tokens", tokens_in)
        )
        attrs.append(
            _OUTPUT_TOKENS.get(tokens_out) or _count(_OUTPUT_TOKENS, "gen_ai.usage.output_tokens", tokens_out)
        )
    if cached is not None:
        cached = _number(cached, int)
        if cached:
            attrs.append(span_attribute("gen_ai.usage.cache_read.input_tokens", cached))
    return attrs, model, usage


_EMPTY: Final[dict[str, Any]] = {}  # read, never written
_INPUT_TOKENS: dict[int, bytes] = {}
_OUTPUT_TOKENS: dict[int, bytes] = {}
_COUNTS_KEPT: Final = 4096  # token counts whose attributes are kept encoded, per attribute


def _count(kept: dict[int, bytes], key: str, count: int) -> bytes:
    """``span_attribute(key, count)``, kept for the next span with as many tokens."""
    found = span_attribute(key, count)
    if len(kept) >= _COUNTS_KEPT:
        kept.clear()
    kept[count] = found
    return found


def _output_message(
    generation: dict[str, Any], message: dict[str, Any] | None, reason: Any
) -> dict[str, Any]:
    """One generation as an entry of ``gen_ai.output.messages``."""
    out = _message(message) if message is not None else None
    if out is None:
        out = {"role": "assistant", "parts": _text_parts(generation.get("text"))}
    out["role"] = "assistant"
    if isinstance(reason, str):
        out["finish_reason"] = reason
    return out


_REASONS: dict[tuple[str, ...], bytes] = {}
# gen_ai.response.id of an ASCII id of n characters, but its text, by n: its head alone
# depends on the id (its length), and the ids are new for every call.
_RESPONSE_ID_KEPT: Final = 128
_RESPONSE_ID_HEADS: Final = tuple(
    span_attribute("gen_ai.response.id", "0" * n)[: -n or None] for n in range(_RESPONSE_ID_KEPT)
)
_RESPONSE_MODELS: dict[str, bytes] = {}  # gen_ai.response.model by model: a few models answer


def _response_model(model: str) -> bytes:
    """``common_span_attribute("gen_ai.response.model", model)``, kept by model."""
    found = common_span_attribute("gen_ai.response.model", model)
    if len(model) <= 200 and len(_RESPONSE_MODELS) < 256:
        _RESPONSE_MODELS[model] = found
    return found


def _finish_reasons(reasons: tuple[str, ...]) -> bytes:
    """``gen_ai.response.finish_reasons``: a few tuples (``("stop",)``, ``("tool_calls",)``) repeat."""
    found = _REASONS.get(reasons)
    if found is None:
        found = span_attribute("gen_ai.response.finish_reasons", list(reasons))
        if sum(map(len, reasons)) <= 200 and len(_REASONS) < 256:
            _REASONS[reasons] = found
    return found


def _tool_output(output: Any) -> Any:
    """A ``ToolMessage`` output as its content; anything else as it is."""
    if isinstance(output, dict) and output.get("type") == "tool" and "content" in output:
        return output["content"]
    return output


def error_type(error: Any) -> str:
    """``error.type``: the exception's class name, as recorded."""
    if isinstance(error, dict) and isinstance(error.get("type"), str) and error["type"]:
        return str(error["type"])
    return "_OTHER"


def tags_attribute(tags: Sequence[Any]) -> bytes | None:
    strings = [t for t in tags if isinstance(t, str)]
    return span_attribute("langchain.tags", strings) if strings else None
