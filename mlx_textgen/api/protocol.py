"""OpenAI request models, and their translation into engine SamplingParams.

Unknown fields are rejected (`extra="forbid"`), so nothing a client asks for is ignored
silently; fields that ask for what a local server can't do are rejected by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from mlx_textgen.api.errors import bad_request
from mlx_textgen.engine.request import SamplingParams
from mlx_textgen.guided.forms import CONSTRAINT_FIELDS

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None  # accepted; nothing to obfuscate locally
    continuous_usage_stats: StrictBool | None = None


class _Common(BaseModel):
    """Fields both endpoints share: sampling, stopping, streaming, and accepted no-ops."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=64)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[StrictInt, Field(ge=-1)] | None = None
    min_p: Probability | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: Annotated[StrictInt, Field(ge=0, lt=2**64)] | None = None  # a PRNG key is 64 bits
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    # Accepted; they do not change what a local server computes.
    user: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None
    store: StrictBool | None = None
    service_tier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    # Extensions that benchmark and agent tools send to local servers (vLLM's names).
    ignore_eos: StrictBool | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    stop_token_ids: list[StrictInt] | None = None
    skip_special_tokens: StrictBool | None = None
    # Structured output, in every spelling clients send (checked in guided/forms.py, which
    # names the field and the problem in its errors).
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    guided_whitespace_pattern: Any = None
    structured_outputs: Any = None
    json_schema: dict[str, Any] | None = None
    grammar: Any = None

    def constraint_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONSTRAINT_FIELDS + ("guided_whitespace_pattern",)}

    @property
    def choices(self) -> int:
        return self.n or 1

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_Common):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    suffix: StrictStr | None = None
    best_of: Annotated[StrictInt, Field(ge=1)] | None = None

    def check_supported(self) -> None:
        if self.suffix:
            raise bad_request("`suffix` (fill-in-the-middle) is not supported", "suffix")
        if self.best_of is not None and self.best_of != self.choices:
            raise bad_request("`best_of` other than `n` is not supported", "best_of")
        if self.stream and self.best_of not in (None, 1):
            raise bad_request("`best_of` can't be used with streaming", "best_of")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: StrictStr | None = None


_UNSUPPORTED_CHAT = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the legacy `functions` field is not supported: use `tools`",
    "function_call": "the legacy `function_call` field is not supported: use `tool_choice`",
    "verbosity": "`verbosity` is not supported",
}


class ChatCompletionRequest(_Common):
    # A list of conversations (the original MLX-Textgen's extra) answers each of them.
    messages: (
        Annotated[list[ChatMessage], Field(min_length=1)]
        | Annotated[list[Annotated[list[ChatMessage], Field(min_length=1)]], Field(min_length=1)]
    )
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    modalities: list[StrictStr] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: StrictStr | dict[str, Any] | None = None
    reasoning_effort: StrictStr | None = None
    # Reasoning extensions (see api/reasoning.py): where the thinking goes, its budget.
    use_reasoning_content: StrictBool | None = None
    max_reasoning_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    thinking_token_budget: Annotated[StrictInt, Field(ge=0)] | None = None
    verbosity: StrictStr | None = None

    def check_supported(self) -> None:
        for field_name, why in _UNSUPPORTED_CHAT.items():
            if getattr(self, field_name) not in (None, []):
                raise bad_request(why, field_name)
        if self.modalities and any(m != "text" for m in self.modalities):
            raise bad_request("only the text modality is supported", "modalities")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("`top_logprobs` requires `logprobs: true`", "top_logprobs")

    @property
    def conversations(self) -> list[list[ChatMessage]]:
        first = self.messages[0]
        return self.messages if isinstance(first, list) else [self.messages]  # type: ignore[return-value]

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


def parse_logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
        if not 0 <= token < vocab_size:
            raise bad_request(
                f"logit_bias token id {token} is outside the vocabulary (0..{vocab_size - 1})",
                "logit_bias",
            )
        out[token] = float(value)
    return out


def to_sampling_params(
    req: _Common,
    *,
    max_tokens: int,
    logprobs: int | None,
    defaults: dict[str, float | int],
    vocab_size: int,
) -> SamplingParams:
    """Request fields, else the model's generation_config.json, else OpenAI's defaults."""

    def pick(name: str, fallback: float) -> Any:
        value = getattr(req, name)
        return value if value is not None else defaults.get(name, fallback)

    for tid in req.stop_token_ids or ():
        if not 0 <= tid < vocab_size:
            raise bad_request(f"stop_token_ids has {tid}, outside the vocabulary", "stop_token_ids")
    top_k = pick("top_k", 0)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=float(pick("temperature", 1.0)),
        top_p=float(pick("top_p", 1.0)),
        top_k=max(0, int(top_k)),
        min_p=float(pick("min_p", 0.0)),
        presence_penalty=float(req.presence_penalty or 0.0),
        frequency_penalty=float(req.frequency_penalty or 0.0),
        repetition_penalty=float(pick("repetition_penalty", 1.0)),
        logit_bias=parse_logit_bias(req.logit_bias, vocab_size),
        seed=req.seed,
        stop=req.stop_list(),
        stop_token_ids=tuple(req.stop_token_ids or ()),
        ignore_eos=bool(req.ignore_eos),
        min_tokens=min(req.min_tokens or 0, max_tokens),
        logprobs=logprobs,
        skip_special_tokens=req.skip_special_tokens is not False,
    )
