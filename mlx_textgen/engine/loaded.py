"""The model whose weights are in memory: its batch generator and per-token helpers."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx

from mlx_textgen import backend
from mlx_textgen.engine.prefill import PromptFeed
from mlx_textgen.engine.request import Request, TokenLogprob
from mlx_textgen.models.loader import ModelInfo, load_weights


class LoadedModel:
    """Weights, vocabulary size and batch generator of the model being served."""

    def __init__(self, info: ModelInfo, prefill_step_size: int, max_running_requests: int) -> None:
        self.info = info
        self.model = load_weights(info)
        self.vocab_size = int(self.model(mx.array([[0]])).shape[-1])
        self.prefill_budget = info.config.preprocess_batch_size or prefill_step_size
        self.running = max(1, max_running_requests)
        self.generator = self.new_generator()
        self.token_text = info.decoder(skip_special_tokens=False)  # logprob entries show every token
        # A vision model prefills through PrefillJob only: its batch rows carry per-sequence
        # positions (vision/positions.py) that mlx-lm's own batched prefill would not set.
        self.batched_prefill = info.vision is None

    def feed(self, request: Request) -> PromptFeed | None:
        """How a prompt with images is prefilled (None: as token ids)."""
        if request.media is None or self.info.vision is None:
            return None
        from mlx_textgen.vision.model import VisionPrefill

        return VisionPrefill(self.model, request.media, request.prompt_ids)

    def context_safe(self, request: Request, procs: list[Any]) -> list[Any]:
        """`procs` for a request whose context holds image-key ids (past the vocabulary:
        vision/prompt.py): they see the image token there instead."""
        if request.media is None or not procs:
            return procs
        from mlx_textgen.vision.model import real_context

        return [real_context(p, request.media.image_token_id) for p in procs]

    def new_generator(self) -> Any:
        return backend.BatchGenerator(
            self.model, completion_batch_size=self.running, prefill_batch_size=self.running,
            prefill_step_size=self.prefill_budget,
        )

    def new_cache(self) -> list[Any]:
        return backend.make_prompt_cache(self.model)

    def logprob(self, token: int, logprobs: mx.array, k: int) -> TokenLogprob:
        """The sampled token's log-probability and the `k` most likely alternatives, from
        the distribution it was sampled from (after penalties, biases and constraints)."""
        decode = self.token_text
        top: tuple[tuple[int, str, float], ...] = ()
        if k > 0:
            idx = mx.argpartition(-logprobs, kth=k - 1)[:k]
            vals = logprobs[idx]
            order = mx.argsort(-vals)
            ids, vs = idx[order].tolist(), vals[order].tolist()
            # Tokens a constraint (or a ban) rules out have -inf: they are no alternative.
            top = tuple((i, decode([i]), float(v)) for i, v in zip(ids, vs) if v != -math.inf)
        return TokenLogprob(token, decode([token]), float(logprobs[token].item()), top)
