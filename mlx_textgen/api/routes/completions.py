"""POST /v1/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.errors import bad_request
from mlx_textgen.api.generation import ChoiceState
from mlx_textgen.api.protocol import CompletionRequest
from mlx_textgen.api.routes.common import budget_tokens, resolve_model, run, vocab_size
from mlx_textgen.engine.request import RequestOutput, TokenLogprob

router = APIRouter()


def _logprobs(items: list[TokenLogprob], start: int) -> dict[str, Any]:
    offsets, pos = [], start
    for t in items:
        offsets.append(pos)
        pos += len(t.text)
    return {
        "tokens": [t.text for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{text: lp for _, text, lp in t.top} for t in items],
        "text_offset": offsets,
    }


class CompletionRenderer:
    object_name = "text_completion"
    chunk_object = "text_completion"

    def __init__(self, prefixes: list[str] | None, want_logprobs: bool) -> None:
        self.prefixes = prefixes  # echoed prompt text per prompt
        self.want_logprobs = want_logprobs

    def _prefix(self, c: ChoiceState) -> str:
        return self.prefixes[c.prompt] if self.prefixes else ""

    def choice(self, c: ChoiceState) -> dict[str, Any]:
        prefix = self._prefix(c)
        return {
            "text": prefix + "".join(c.text),
            "index": c.index,
            "logprobs": _logprobs(c.logprobs, len(prefix)) if self.want_logprobs else None,
            "finish_reason": c.finish_reason.value if c.finish_reason else None,
        }

    def chunk_choice(self, c: ChoiceState, out: RequestOutput, first: bool) -> dict[str, Any] | None:
        text = (self._prefix(c) if first else "") + out.text
        if not text and not out.finished and not out.logprobs:
            return None
        return {
            "text": text,
            "index": c.index,
            "logprobs": _logprobs(out.logprobs, 0) if self.want_logprobs else None,
            "finish_reason": out.finish_reason.value if out.finished else None,
        }


def _tokenize(info: Any, prompt: Any) -> tuple[list[list[int]], list[str] | None]:
    """Prompts as token ids, plus their text when given as text."""
    tok = info.hf_tokenizer
    if isinstance(prompt, str):
        return [tok.encode(prompt)], [prompt]
    if prompt and all(isinstance(p, str) for p in prompt):
        return [tok.encode(p) for p in prompt], list(prompt)
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)], None
    return [list(p) for p in prompt], None


@router.post("/v1/completions")
async def completions(body: CompletionRequest, http: Request) -> Any:
    body.check_supported()
    info = resolve_model(http, body.model)
    if body.echo and body.logprobs is not None:
        raise bad_request("`echo` together with `logprobs` (prompt logprobs) is not supported", "echo")
    prompts, texts = await run_in_threadpool(_tokenize, info, body.prompt)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise bad_request("`prompt` must not be empty", "prompt")
    vocab = vocab_size(info)
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise bad_request(f"prompt token ids must be in 0..{vocab - 1}", "prompt")
    if body.echo and texts is None:
        texts = [info.hf_tokenizer.decode(p) for p in prompts]
    max_tokens = budget_tokens(info, prompts, body.max_tokens, "max_tokens")
    renderer = CompletionRenderer(texts if body.echo else None, body.logprobs is not None)
    return await run(
        http, body, info, prompts, max_tokens=max_tokens, logprobs=body.logprobs,
        renderer=renderer, body=body,
    )
