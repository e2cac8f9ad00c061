"""The one module that imports mlx-lm internals.

Loading, caches, batch generation and sampling pieces come from mlx-lm; an mlx-lm
upgrade means editing this file and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.generate import BatchGenerator, StopSequences, generate_step
from mlx_lm.models.cache import KVCache, make_prompt_cache
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
    "to_float_weights",
]


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
