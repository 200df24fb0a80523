"""Offline, deterministic stand-ins for LangChain's OpenAI models.

`FakeOpenAI` mimics `langchain_openai.OpenAI` (a text-completion LLM) and
`FakeChatOpenAI` mimics `langchain_openai.ChatOpenAI`. Both accept the same
hyperparameters as the real classes (`temperature`, `model_name`,
`max_tokens`, `top_p`, ...), report them in their identifying params (so a
callback handler sees them in `invocation_params` on `on_llm_start` /
`on_chat_model_start`), cycle through a scripted list of `responses`, support
sync/async invocation and token streaming, and report token usage computed
from whitespace-separated word counts, like OpenAI does. They report the
provider `openai` (`ls_provider`, in LangChain's tracing params and in their
own metadata), as the real classes do.

`FakeOpenAI` can also simulate transient API failures
(`transient_failures`), which it retries through LangChain's own
`create_base_retry_decorator`, exactly like the legacy OpenAI integration.
This is the code path that makes langchain-core emit `on_retry`.

Example:
    ```python
    llm = FakeOpenAI(responses=["Why did the fish blush?"], temperature=0.1)
    llm.invoke("tell me a joke about fish")
    ```
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, BaseLLM, LangSmithParams
from langchain_core.language_models.llms import create_base_retry_decorator
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    Generation,
    GenerationChunk,
    LLMResult,
)
from pydantic import Field, PrivateAttr, model_validator
from tenacity import wait_none

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )

__all__ = [
    "DEFAULT_RESPONSES",
    "FakeChatOpenAI",
    "FakeOpenAI",
    "FakeTransientError",
    "count_tokens",
    "split_tokens",
]

DEFAULT_RESPONSES: tuple[str, ...] = ("This is a fake response.",)
"""Responses used when none are given."""

_TOKEN_SPLIT = re.compile(r"(?<=\s)(?=\S)")


class FakeTransientError(RuntimeError):
    """Simulated transient API error (think `openai.RateLimitError`)."""


def count_tokens(text: str) -> int:
    """Count "tokens" the way the fakes do: whitespace-separated words.

    Args:
        text: The text to measure.

    Returns:
        The number of whitespace-separated words in `text`.
    """
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    """Split `text` into streaming tokens: one word plus trailing whitespace.

    `"".join(split_tokens(text)) == text` always holds.

    Args:
        text: The text to split.

    Returns:
        The tokens; `[""]` for an empty string so that a stream always yields
        at least one chunk.
    """
    return [tok for tok in _TOKEN_SPLIT.split(text) if tok] or [""]


def _apply_stop(text: str, stop: list[str] | None) -> str:
    """Truncate `text` at the first occurrence of any stop sequence.

    Args:
        text: The generated text.
        stop: Stop sequences, as passed by LangChain (e.g. by agents).

    Returns:
        `text` cut before the earliest stop sequence, or unchanged.
    """
    if not stop:
        return text
    cut = len(text)
    for seq in stop:
        if seq:
            idx = text.find(seq)
            if idx != -1:
                cut = min(cut, idx)
    return text[:cut]


def _token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Build an OpenAI-style `token_usage` mapping.

    Args:
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens in the completion.

    Returns:
        `{"prompt_tokens", "completion_tokens", "total_tokens"}`.
    """
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


#: The provider the fakes report (``ls_provider``, then ``gen_ai.provider.name`` in an export):
#: that of the models they imitate, as ``langchain_openai`` reports it.
PROVIDER = "openai"


def _with_provider(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A fake's own metadata with ``ls_provider``: LangChain's legacy ``generate()`` path
    (``LLMChain``, agents) sends no ``ls_*`` params, and a real model's provider is then
    read from its class path (``langchain...openai``), a fake's from ``asynctrack._demo._fakes``."""
    return {"ls_provider": PROVIDER, **(metadata or {})}


def _map_model_alias(values: Any) -> Any:
    """Accept `model=` as an alias of `model_name=` (like langchain-openai).

    Args:
        values: Raw constructor input.

    Returns:
        The input, with `model` renamed to `model_name` when only `model` was
        given.
    """
    if isinstance(values, dict) and "model" in values and "model_name" not in values:
        values = dict(values)
        values["model_name"] = values.pop("model")
    return values


def _message_text(message: BaseMessage) -> str:
    """Return the plain text of a message (string or content-block list).

    Args:
        message: Any LangChain message.

    Returns:
        The message's text content.
    """
    return message.text


class FakeOpenAI(BaseLLM):
    """Offline fake of `langchain_openai.OpenAI` (text completions).

    Cycles through `responses` (wrapping around), truncates at stop sequences,
    reports OpenAI-style hyperparameters in `invocation_params` and token
    usage in `LLMResult.llm_output["token_usage"]`.

    Streaming: `.stream()` / `.astream()` always stream (one chunk per word,
    firing `on_llm_new_token`); with `streaming=True`, `invoke` / `generate`
    stream internally too, just like the real class.

    Retries: the first `transient_failures` calls raise
    `FakeTransientError`; each call is retried up to `max_retries` times
    through `langchain_core.language_models.llms.create_base_retry_decorator`,
    which emits `on_retry` before each new attempt (without sleeping).
    """

    responses: list[str] = Field(default_factory=lambda: list(DEFAULT_RESPONSES))
    """Scripted completions, returned in order and cycled."""
    model_name: str = "gpt-3.5-turbo-instruct"
    """Model name reported to callbacks (alias: `model`)."""
    temperature: float = 0.7
    """Sampling temperature (reported only)."""
    max_tokens: int = 256
    """Maximum completion tokens (reported only)."""
    top_p: float = 1.0
    """Nucleus sampling (reported only)."""
    frequency_penalty: float = 0.0
    """Frequency penalty (reported only)."""
    presence_penalty: float = 0.0
    """Presence penalty (reported only)."""
    n: int = 1
    """Completions per prompt (reported only)."""
    streaming: bool = False
    """Whether `invoke` / `generate` stream internally."""
    max_retries: int = 2
    """Retries after a `FakeTransientError`."""
    transient_failures: int = 0
    """Number of initial calls that fail with `FakeTransientError`."""

    _index: int = PrivateAttr(default=0)
    _failures_left: int = PrivateAttr(default=0)

    @model_validator(mode="before")
    @classmethod
    def _accept_model_alias(cls, values: Any) -> Any:
        return _map_model_alias(values)

    def model_post_init(self, context: Any, /) -> None:
        """Arm the transient-failure counter.

        Args:
            context: Pydantic's post-init context.
        """
        super().model_post_init(context)
        self.metadata = _with_provider(self.metadata)
        self._failures_left = self.transient_failures

    @property
    def _llm_type(self) -> str:
        return "fake-openai"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """LangChain's tracing params, with the imitated model's provider (LangChain's default
        derives ``fakeopenai`` from the class name)."""
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = PROVIDER
        return params

    @property
    def _default_params(self) -> dict[str, Any]:
        """OpenAI-style request parameters."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "n": self.n,
        }

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {"model_name": self.model_name, **self._default_params}

    # -- scripted behaviour -------------------------------------------------

    def _next_response(self) -> str:
        """Return the next scripted response (raising while failures remain).

        Returns:
            The next response, cycling through `responses`.

        Raises:
            FakeTransientError: While `transient_failures` are not used up.
        """
        if self._failures_left > 0:
            self._failures_left -= 1
            msg = "Simulated transient error (rate limit); please retry."
            raise FakeTransientError(msg)
        if not self.responses:
            return ""
        response = self.responses[self._index % len(self.responses)]
        self._index = (self._index + 1) % len(self.responses)
        return response

    def _complete(
        self,
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
    ) -> str:
        """Fetch one completion, retrying transient errors (emits `on_retry`).

        Args:
            stop: Stop sequences.
            run_manager: The LLM run's callback manager.

        Returns:
            The completion text, truncated at stop sequences.
        """
        decorator = create_base_retry_decorator(
            [FakeTransientError],
            max_retries=self.max_retries + 1,
            run_manager=run_manager,
        )
        completion = decorator(self._next_response).retry_with(wait=wait_none())
        text: str = completion()
        return _apply_stop(text, stop)

    async def _acomplete(
        self,
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
    ) -> str:
        """Async `_complete`.

        Args:
            stop: Stop sequences.
            run_manager: The LLM run's async callback manager.

        Returns:
            The completion text, truncated at stop sequences.
        """
        decorator = create_base_retry_decorator(
            [FakeTransientError],
            max_retries=self.max_retries + 1,
            run_manager=run_manager,
        )

        async def _next() -> str:
            return self._next_response()

        completion = decorator(_next).retry_with(wait=wait_none())
        text: str = await completion()
        return _apply_stop(text, stop)

    # -- BaseLLM hooks ------------------------------------------------------

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[list[Generation]] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            if self.streaming:
                text = "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
            else:
                text = self._complete(stop, run_manager)
            generations.append([_text_generation(text)])
            prompt_tokens += count_tokens(prompt)
            completion_tokens += count_tokens(text)
        return LLMResult(
            generations=generations,
            llm_output={
                "token_usage": _token_usage(prompt_tokens, completion_tokens),
                "model_name": self.model_name,
            },
        )

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[list[Generation]] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            if self.streaming:
                parts = [chunk.text async for chunk in self._astream(prompt, stop, run_manager, **kwargs)]
                text = "".join(parts)
            else:
                text = await self._acomplete(stop, run_manager)
            generations.append([_text_generation(text)])
            prompt_tokens += count_tokens(prompt)
            completion_tokens += count_tokens(text)
        return LLMResult(
            generations=generations,
            llm_output={
                "token_usage": _token_usage(prompt_tokens, completion_tokens),
                "model_name": self.model_name,
            },
        )

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        text = self._complete(stop, run_manager)
        tokens = split_tokens(text)
        for i, token in enumerate(tokens):
            info = {"finish_reason": "stop"} if i == len(tokens) - 1 else None
            chunk = GenerationChunk(text=token, generation_info=info)
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        text = await self._acomplete(stop, run_manager)
        tokens = split_tokens(text)
        for i, token in enumerate(tokens):
            info = {"finish_reason": "stop"} if i == len(tokens) - 1 else None
            chunk = GenerationChunk(text=token, generation_info=info)
            if run_manager:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _text_generation(text: str) -> Generation:
    """Wrap a completion in an OpenAI-like `Generation`.

    Args:
        text: The completion text.

    Returns:
        A `Generation` with `finish_reason` / `logprobs` generation info.
    """
    return Generation(text=text, generation_info={"finish_reason": "stop", "logprobs": None})


class FakeChatOpenAI(BaseChatModel):
    """Offline fake of `langchain_openai.ChatOpenAI`.

    Cycles through `responses`, returns `AIMessage`s carrying
    `usage_metadata` (input/output/total token counts from word counts) and
    `response_metadata` (`model_name`, `finish_reason`), puts OpenAI-style
    `token_usage` in `ChatResult.llm_output`, and streams one
    `AIMessageChunk` per word (the last chunk carries the usage).
    """

    responses: list[str] = Field(default_factory=lambda: list(DEFAULT_RESPONSES))
    """Scripted replies, returned in order and cycled."""
    model_name: str = "gpt-3.5-turbo"
    """Model name reported to callbacks (alias: `model`)."""
    temperature: float = 0.7
    """Sampling temperature (reported only)."""
    max_tokens: int | None = None
    """Maximum completion tokens (reported only)."""
    top_p: float = 1.0
    """Nucleus sampling (reported only)."""
    frequency_penalty: float = 0.0
    """Frequency penalty (reported only)."""
    presence_penalty: float = 0.0
    """Presence penalty (reported only)."""
    n: int = 1
    """Completions per prompt (reported only)."""
    streaming: bool = False
    """Whether `invoke` streams internally."""

    _index: int = PrivateAttr(default=0)

    @model_validator(mode="before")
    @classmethod
    def _accept_model_alias(cls, values: Any) -> Any:
        return _map_model_alias(values)

    def model_post_init(self, context: Any, /) -> None:
        """Add the provider to the model's metadata (``_with_provider``).

        Args:
            context: Pydantic's post-init context.
        """
        super().model_post_init(context)
        self.metadata = _with_provider(self.metadata)

    @property
    def _llm_type(self) -> str:
        return "fake-openai-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """LangChain's tracing params, with the imitated model's provider (LangChain's default
        derives ``fakechatopenai`` from the class name)."""
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = PROVIDER
        return params

    @property
    def _default_params(self) -> dict[str, Any]:
        """OpenAI-style request parameters."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "n": self.n,
        }

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, **self._default_params}

    def _next_reply(self, stop: list[str] | None) -> str:
        """Return the next scripted reply, truncated at stop sequences.

        Args:
            stop: Stop sequences.

        Returns:
            The reply text.
        """
        if not self.responses:
            return ""
        reply = self.responses[self._index % len(self.responses)]
        self._index = (self._index + 1) % len(self.responses)
        return _apply_stop(reply, stop)

    def _usage(self, messages: list[BaseMessage], text: str) -> UsageMetadata:
        """Compute `usage_metadata` for a reply.

        Args:
            messages: The prompt messages.
            text: The reply text.

        Returns:
            Input/output/total token counts (word counts).
        """
        input_tokens = sum(count_tokens(_message_text(m)) for m in messages)
        output_tokens = count_tokens(text)
        return UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    def _result(self, messages: list[BaseMessage], text: str) -> ChatResult:
        """Build the `ChatResult` for a reply.

        Args:
            messages: The prompt messages.
            text: The reply text.

        Returns:
            A single-generation `ChatResult` with OpenAI-style `llm_output`.
        """
        usage = self._usage(messages, text)
        message = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": "stop",
            },
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={
                "token_usage": _token_usage(usage["input_tokens"], usage["output_tokens"]),
                "model_name": self.model_name,
            },
        )

    def _chunks(self, messages: list[BaseMessage], text: str) -> list[ChatGenerationChunk]:
        """Split a reply into streaming chunks; the last one carries usage.

        Args:
            messages: The prompt messages.
            text: The reply text.

        Returns:
            One chunk per word, plus a final empty chunk with usage metadata.
        """
        chunks = [
            ChatGenerationChunk(message=AIMessageChunk(content=token))
            for token in split_tokens(text)
            if token
        ]
        chunks.append(
            ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata=self._usage(messages, text),
                    response_metadata={
                        "model_name": self.model_name,
                        "finish_reason": "stop",
                    },
                    chunk_position="last",
                ),
                generation_info={"finish_reason": "stop"},
            )
        )
        return chunks

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, self._next_reply(stop))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, self._next_reply(stop))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # langchain-core's stream()/invoke() call `_stream` without a run
        # manager and fire `on_llm_new_token` themselves; other paths (e.g.
        # `stream_events(version="v3")`) pass one, and then we fire it, like
        # the real provider integrations do.
        for chunk in self._chunks(messages, self._next_reply(stop)):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, self._next_reply(stop)):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
