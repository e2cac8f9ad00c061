"""The vision tower's output cache and image-prompt expansion (no server)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("mlx_vlm")

from mlx_textgen.vision.model import TowerCache
from mlx_textgen.vision.pixels import decode_image
from mlx_textgen.vision.prompt import KEY_BASE, VisionSpec, expand, key_ids
from tests.vision.images import encode, pixels
from tests.vision_model import write_vision_model


def test_least_recently_used_features_go_first() -> None:
    one = mx.zeros((4, 8))  # 128 bytes each
    cache = TowerCache(budget_bytes=300)
    cache.put("a", one)
    cache.put("b", one)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", one)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", mx.zeros((100, 8)))  # over the whole budget: not kept
    assert cache.get("huge") is None


def test_key_ids_are_past_any_vocabulary_and_differ_by_image() -> None:
    a, b = key_ids("ab" * 32, 4), key_ids("cd" * 32, 4)
    assert min(a + b) >= KEY_BASE and a != b and len(set(a)) == 4
    assert max(a + b) < 2**31  # the disk tier stores ids as uint32


@pytest.mark.parametrize("arch", ["qwen2_vl", "idefics3"])
def test_expansion_keys_image_tokens_and_moves_boundaries(tmp_path, arch: str) -> None:
    import json

    d = write_vision_model(tmp_path / arch, arch)
    cfg = json.loads((d / "config.json").read_text())
    spec = VisionSpec(cfg["model_type"], str(d), cfg["image_token_id"])
    img = decode_image(encode(pixels(1)))
    ids = [1, 2, spec.image_token_id, 3, 4]
    out, bounds, media = expand(spec, ids, (2, 4), [img])
    (image,) = media.images
    keyed = [t for t in out if t >= KEY_BASE]
    assert len(keyed) == image.count == 4 and out[:2] == [1, 2] and out[-2:] == [3, 4]
    assert bounds == (2, len(out) - 1)  # the boundary after the image moved with it
    assert media.real_ids(out).count(spec.image_token_id) == image.count
    with pytest.raises(ValueError, match="placeholders"):
        expand(spec, ids, (), [img, img])


def test_an_image_seen_again_is_not_processed_again(tmp_path, monkeypatch) -> None:
    import gc
    import json

    from mlx_textgen.vision import prompt
    from mlx_textgen.vision.shared import SharedArray, SharedStore, opened

    monkeypatch.setattr(prompt, "_processed", SharedStore(prompt.PROCESSED_CACHE_BYTES))
    d = write_vision_model(tmp_path / "m", "qwen2_vl")
    cfg = json.loads((d / "config.json").read_text())
    spec = VisionSpec(cfg["model_type"], str(d), cfg["image_token_id"])
    calls: list[str] = []
    real = prompt._process
    monkeypatch.setattr(prompt, "_process", lambda s, i: calls.append(i.digest) or real(s, i))
    a, b = decode_image(encode(pixels(1, (112, 112)))), decode_image(encode(pixels(2, (112, 112))))
    first = expand(spec, [spec.image_token_id], (), [a])[2]
    again = expand(spec, [spec.image_token_id], (), [decode_image(encode(pixels(1, (112, 112))))])[2]
    other = expand(spec, [spec.image_token_id], (), [b])[2].images[0]
    assert calls == [a.digest, b.digest]  # the second `a` came from the cache
    one, same = first.images[0], again.images[0]
    assert same.count == one.count and same.arrays == one.arrays  # the same shared handles
    assert isinstance(one.arrays["pixel_values"], SharedArray)  # 64 patches x 1176 floats
    with opened(one.arrays["pixel_values"]) as px:
        direct = real(spec, a)[1]["pixel_values"]
        assert np.array_equal(px, direct)
    key = (spec.model_dir, a.digest)
    assert prompt._processed.pinned(key) == 2  # two live prompts use it
    del first, again, one, same
    gc.collect()
    assert prompt._processed.pinned(key) == 0 and other.digest != a.digest
