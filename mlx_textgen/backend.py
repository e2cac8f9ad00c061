"""The one module that imports mlx-lm internals.

Loading, caches, batch generation and sampling pieces come from mlx-lm; an mlx-lm
upgrade means editing this file and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.generate import BatchGenerator, GenerationBatch, StopSequences, generate_step
from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import _download, dequantize_model, load_model, load_tokenizer

__all__ = [
    "BatchGenerator",
    "KVCache",
    "StopSequences",
    "TokenizerWrapper",
    "apply_min_p",
    "apply_top_k",
    "apply_top_p",
    "download",
    "generate_step",
    "load_tokenizer",
    "load_weights",
    "make_prompt_cache",
    "set_decode_hook",
    "to_float_weights",
]


def _decode_mask_only_when_padded(make_mask: Any) -> Any:
    """mlx-lm's batch cache builds a mask for every decode step. With one query per row
    and no row left-padded it selects every key, and a mask array keeps MLX's GPU
    backends off their fused single-query attention kernel (CUDA falls back to separate
    matmul, softmax and matmul); so in that case there is none, which is exact."""

    def batch_make_mask(self: Any, N: int, return_array: bool = False, **kwargs: Any) -> Any:
        if N == 1 and not return_array and kwargs.get("window_size") is None:
            if not any(self.left_padding.tolist()):  # B ints; evaluated once per change
                return None
        return make_mask(self, N, return_array=return_array, **kwargs)

    batch_make_mask.__wrapped__ = make_mask  # type: ignore[attr-defined]
    return batch_make_mask


if not hasattr(BatchKVCache.make_mask, "__wrapped__"):
    BatchKVCache.make_mask = _decode_mask_only_when_padded(BatchKVCache.make_mask)


def download(path_or_repo: str, revision: str | None = None) -> Path:
    """A local model dir: the path itself, or a Hugging Face snapshot (downloaded if needed)."""
    return _download(path_or_repo, revision=revision)


def load_weights(model_dir: Path, model_kwargs: dict[str, Any]) -> tuple[nn.Module, dict]:
    """Build the mlx-lm model class for `model_dir` and load its weights."""
    return load_model(model_dir, lazy=False, model_config=dict(model_kwargs))


def to_float_weights(model: nn.Module, dtype: mx.Dtype = mx.float32) -> bool:
    """Dequantize and cast to `dtype`; returns whether anything was quantized."""
    quantized = any(
        isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()
    )
    if quantized:
        dequantize_model(model)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return quantized


# A batch-level hook on the decode step's logits: `hook(uids, tokens, logits) -> logits`
# (used while `hook.engaged`),
# called with the rows' uids in batch order, the (B,) tokens the forward pass takes (the
# array the last step sampled, not a view of it: reading a new view would queue behind the
# forward pass) and its (B, 1, V) logits, before mlx-lm's per-row processors and sampling.
# Structured output masks every constrained row with one kernel here: a per-row logits
# processor would make mlx-lm slice, process and re-concatenate every row of every step.
_decode_hooks: dict[int, Any] = {}


def set_decode_hook(model: nn.Module, hook: Any | None) -> None:
    """Install (or, with None, remove) the decode-step logits hook of `model`'s batches."""
    if hook is None:
        _decode_hooks.pop(id(model), None)
    else:
        _decode_hooks[id(model)] = hook


def _with_decode_hook(step: Any) -> Any:
    def hooked_step(self: Any) -> Any:
        hook = _decode_hooks.get(id(self.model))
        if hook is None or not hook.engaged:  # nothing to do: mlx-lm's own step, untouched
            return step(self)
        model, uids, tokens = self.model, list(self.uids), self._next_tokens
        mx.async_eval(tokens)  # a join's concatenation or a filter's gather: before the forward

        def forward(inputs: mx.array, cache: Any = None) -> mx.array:
            return hook(uids, tokens, model(inputs, cache=cache))

        self.model = forward
        try:
            return step(self)
        finally:
            self.model = model

    hooked_step.__wrapped__ = step  # type: ignore[attr-defined]
    return hooked_step


if not hasattr(GenerationBatch._step, "__wrapped__"):
    GenerationBatch._step = _with_decode_hook(GenerationBatch._step)
