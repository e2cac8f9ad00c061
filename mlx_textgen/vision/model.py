"""An mlx-vlm model shaped like an mlx-lm one, so the engine's batch generator, chunked
prefill and prompt cache drive it unchanged.

Text (decode steps, text-only prompts) goes through ``__call__(tokens, cache)`` as for any
model. A prompt with images is prefilled through ``VisionPrefill``: the prompt's token
embeddings with each image's vision-tower output in place of its image tokens, fed a chunk
at a time with the prompt's own positions. The tower's output for a recently seen image
(by pixel hash) is reused, and an image the prompt cache already holds is never run.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from mlx_textgen.backend import KVCache
from mlx_textgen.vision import positions
from mlx_textgen.vision.lru import SizedLRU
from mlx_textgen.vision.prompt import GRID_FAMILIES, KEY_BASE, PromptImage, VisionPrompt
from mlx_textgen.vision.shared import opened

TOWER_CACHE_BYTES = 256 * 2**20


class TowerCache(SizedLRU[mx.array]):
    """Vision-tower outputs of recent images by pixel hash, least recently used out first."""

    def __init__(self, budget_bytes: int = TOWER_CACHE_BYTES) -> None:
        super().__init__(budget_bytes, lambda feats: feats.nbytes)
        self.hits = 0
        self.runs = 0

    def get(self, digest: str) -> mx.array | None:  # type: ignore[override]
        feats = super().get(digest)
        self.hits += feats is not None
        return feats


class VisionLanguageModel:
    """mlx-vlm's model behind mlx-lm's model interface (`__call__`, `layers`, `make_cache`)."""

    def __init__(self, vlm: Any, model_type: str, image_token_id: int) -> None:
        self.vlm = vlm
        self.model_type = model_type
        self.image_token_id = image_token_id
        self.mrope = model_type in GRID_FAMILIES  # positions are 3-D and shifted by images
        self.lm = vlm.language_model
        self.tower = TowerCache()
        positions.install()

    @property
    def layers(self) -> list[Any]:
        return self.lm.layers

    def make_cache(self) -> list[Any]:
        return [KVCache() for _ in self.layers]

    def parameters(self) -> Any:
        return self.vlm.parameters()

    def embed(self, tokens: mx.array) -> mx.array:
        table = getattr(self.lm, "embed_tokens", None) or self.lm.model.embed_tokens
        return table(tokens)

    def __call__(
        self, inputs: mx.array, cache: list[Any] | None = None,
        embeds: mx.array | None = None, position_ids: mx.array | None = None, **_: Any,
    ) -> mx.array:
        """Logits (batch, length, vocab) for `inputs` after what `cache` holds."""
        if not self.mrope:
            return self.lm(inputs, inputs_embeds=embeds, cache=cache).logits
        if position_ids is None:
            pos = positions.decode_positions(cache[0], inputs.shape[1]) if cache else (
                mx.arange(inputs.shape[1])[None]
            )
            position_ids = mx.broadcast_to(pos[None], (3, *pos.shape))
        h = self.lm.model(inputs, cache=cache, inputs_embeds=embeds, position_ids=position_ids)
        head = getattr(self.lm, "lm_head", None)
        return head(h) if head is not None else self.lm.model.embed_tokens.as_linear(h)

    def features(self, image: PromptImage) -> mx.array:
        """The vision tower's output for one image: (image tokens, hidden)."""
        feats = self.tower.get(image.digest)
        if feats is None:
            arrays = {}
            for k, v in image.arrays.items():
                with opened(v) as a:  # a shared array: copied out here (vision/shared.py)
                    arrays[k] = mx.array(a)
            ids = mx.full((1, image.count), self.image_token_id, dtype=mx.int32)
            out = self.vlm.get_input_embeddings(ids, **arrays)  # all image tokens: the features
            feats = out.inputs_embeds[0]
            mx.eval(feats)
            self.tower.runs += 1
            self.tower.put(image.digest, feats)
        return feats


def real_context(proc: Any, image_token_id: int) -> Any:
    """A logits processor that reads the context with image-key ids as the image token (a
    penalty's counts are vocabulary-sized: a key id would index past them)."""

    def apply(ctx: mx.array, logits: mx.array) -> mx.array:
        return proc(mx.where(ctx >= KEY_BASE, image_token_id, ctx), logits)

    return apply


class VisionPrefill:
    """Feeds one image prompt's prefill chunks: embeddings with image features merged in,
    at the prompt's own positions; `delta` is where the text after it sits (mrope)."""

    def __init__(self, model: VisionLanguageModel, media: VisionPrompt, keyed: list[int]) -> None:
        self.model = model
        self.media = media
        self.keyed = keyed
        self.real = media.real_ids(keyed)
        self._embeds: mx.array | None = None
        self._positions: mx.array | None = None
        self._delta = 0
        if model.mrope:
            grids = []
            for i in media.images:
                with opened(i.arrays["image_grid_thw"]) as g:
                    grids.append(mx.array(g))
            pos, delta = model.lm.get_rope_index(
                mx.array(self.real)[None], mx.concatenate(grids) if grids else None
            )
            self._positions, self._delta = pos, int(delta.reshape(-1)[0].item())

    @property
    def delta(self) -> int:
        return self._delta

    def _merged(self, start: int) -> mx.array:
        """Embeddings of the whole prompt; images that end before `start` are skipped (the
        prompt cache holds them), so their tower never runs."""
        embeds = self.model.embed(mx.array(self.real)[None])
        for image in self.media.images:
            if image.end <= start:
                continue
            where = [k for k in range(image.start, image.end) if self.keyed[k] >= KEY_BASE]
            feats = self.model.features(image).astype(embeds.dtype)
            embeds[0, mx.array(where)] = feats
        return embeds

    def step(self, cache: list[Any], start: int, n: int) -> None:
        """Run prompt tokens [start, start + n) into `cache`."""
        if self._embeds is None:
            self._embeds = self._merged(start)
        chunk = mx.array(self.real[start : start + n])[None]
        pos = None if self._positions is None else self._positions[:, :, start : start + n]
        self.model(chunk, cache=cache, embeds=self._embeds[:, start : start + n], position_ids=pos)

    def begin_decode(self, cache: list[Any]) -> None:
        positions.set_delta(cache, self._delta)
