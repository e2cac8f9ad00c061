"""The batch cache's decode mask is dropped only where it would select every key, and
dropping it changes no logit."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models import llama
from mlx_lm.models.cache import BatchKVCache

from mlx_textgen import backend


def _cache(left_padding: list[int], idx: int) -> BatchKVCache:
    c = BatchKVCache(left_padding)
    c.keys = mx.zeros((len(left_padding), 2, 256, 8))
    c.values = mx.zeros((len(left_padding), 2, 256, 8))
    c._idx = idx
    return c


def test_mask_only_when_some_row_is_padded():
    assert _cache([0, 0, 0], 7).make_mask(1) is None
    assert _cache([0, 3, 0], 7).make_mask(1).shape == (3, 1, 1, 8)
    assert _cache([0, 0], 7).make_mask(4).shape[-2:] == (4, 11)  # prefill keeps its mask
    assert _cache([0, 0], 7).make_mask(1, return_array=True) is not None
    assert _cache([0, 0], 7).make_mask(1, window_size=4) is not None


def test_unpadded_batch_decodes_the_same_without_the_mask():
    mx.random.seed(0)
    args = llama.ModelArgs.from_dict(dict(
        model_type="llama", vocab_size=64, hidden_size=32, num_hidden_layers=2,
        intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=True,
    ))
    model = llama.Model(args)
    prompts = mx.array([[1, 5, 9, 2, 7], [3, 3, 8, 1, 4]])

    def decode(masked: bool) -> mx.array:
        cache = [BatchKVCache([0, 0]) for _ in model.layers]
        model(prompts, cache=cache)
        step = mx.array([[6], [11]])
        if masked:  # what mlx-lm builds for this step
            original = BatchKVCache.make_mask.__wrapped__
            mask = original(cache[0], 1)
            h = model.model.embed_tokens(step)
            for layer, c in zip(model.model.layers, cache):
                h = layer(h, mask, c)
            return model.model.embed_tokens.as_linear(model.model.norm(h))
        return model(step, cache=cache)

    with_mask, without = decode(True), decode(False)
    assert backend.BatchKVCache.make_mask is BatchKVCache.make_mask
    assert mx.allclose(with_mask, without, atol=1e-5).item()
