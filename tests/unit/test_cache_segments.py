"""Segment blobs on tiny random arrays: KV slices, checkpoints, numpy round trips, copies."""

from __future__ import annotations

import gc

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import ArraysCache, KVCache, QuantizedKVCache, RotatingKVCache

from mlx_textgen.cache import segments as seg

LAYERS, HEADS, DIM = 2, 2, 4


def kv(tokens: int, seed: int, dtype: mx.Dtype = mx.float32) -> mx.array:
    return mx.random.normal((1, HEADS, tokens, DIM), key=mx.random.key(seed)).astype(dtype)


def filled(tokens: int, dtype: mx.Dtype = mx.float32, seed: int = 0) -> list[KVCache]:
    """Caches fed ``tokens`` tokens in two chunks, as a chunked prefill would."""
    cache = [KVCache() for _ in range(LAYERS)]
    half = tokens // 2
    for i, c in enumerate(cache):
        c.update_and_fetch(kv(half, seed + 10 * i, dtype), kv(half, seed + 10 * i + 1, dtype))
        rest = tokens - half
        c.update_and_fetch(kv(rest, seed + 10 * i + 2, dtype), kv(rest, seed + 10 * i + 3, dtype))
    mx.eval([c.state for c in cache])
    return cache


def as_np(x: mx.array) -> np.ndarray:
    return np.array(x.astype(mx.float32))


def test_slice_and_restore_round_trip():
    cache = filled(10)
    parts = [seg.slice_kv(cache, 0, 4), seg.slice_kv(cache, 4, 10)]
    assert [p.ntokens for p in parts] == [4, 6]
    for length in (10, 7, 4, 2):
        fresh = [KVCache() for _ in range(LAYERS)]
        seg.restore_kv(fresh, parts[: 1 if length <= 4 else 2], length)
        for c, orig in zip(fresh, cache):
            assert c.offset == length
            keys, values = c.keys_and_values()
            np.testing.assert_array_equal(as_np(keys), as_np(orig.keys[..., :length, :]))
            np.testing.assert_array_equal(as_np(values), as_np(orig.values[..., :length, :]))


def test_restore_leaves_room_for_the_rest_of_the_prompt():
    """A hit's remaining prompt tokens land in the restored buffer: no reallocation."""
    cache = filled(10)
    fresh = [KVCache() for _ in range(LAYERS)]
    seg.restore_kv(fresh, [seg.slice_kv(cache, 0, 10)], 10, room=300)
    capacity = fresh[0].keys.shape[2]
    assert capacity >= 310 and capacity % fresh[0].step == 0 and fresh[0].offset == 10
    more = kv(300, 5)
    keys, _ = fresh[0].update_and_fetch(more, more)
    assert fresh[0].keys.shape[2] == capacity and fresh[0].offset == 310
    np.testing.assert_array_equal(as_np(keys[..., :10, :]), as_np(cache[0].keys[..., :10, :]))
    np.testing.assert_array_equal(as_np(keys[..., 10:, :]), as_np(more))


def test_restored_cache_keeps_growing():
    cache = filled(6)
    fresh = [KVCache() for _ in range(LAYERS)]
    seg.restore_kv(fresh, [seg.slice_kv(cache, 0, 6)], 6)
    more = kv(3, 99)
    keys, _ = fresh[0].update_and_fetch(more, more)
    assert keys.shape[2] == 9 and fresh[0].offset == 9
    np.testing.assert_array_equal(as_np(keys[..., 6:, :]), as_np(more))
    np.testing.assert_array_equal(as_np(keys[..., :6, :]), as_np(cache[0].keys[..., :6, :]))


def test_tail_is_the_last_tokens():
    cache = filled(8)
    whole = seg.slice_kv(cache, 0, 8)
    tail = seg.tail_kv(whole, 3)
    assert tail.ntokens == 3
    np.testing.assert_array_equal(
        as_np(tail.arrays["1.values"]), as_np(cache[1].values[..., 5:8, :])
    )
    with pytest.raises(ValueError):
        seg.tail_kv(whole, 9)


def test_slice_beyond_the_cache_is_refused():
    with pytest.raises(ValueError):
        seg.slice_kv(filled(4), 0, 5)


def test_mutating_the_source_leaves_the_segment_alone():
    cache = filled(6)
    part = seg.slice_kv(cache, 0, 6)
    before = {name: as_np(a) for name, a in part.arrays.items()}
    for c in cache:  # rewind and overwrite in place, as a reused cache does
        c.trim(6)
        c.update_and_fetch(kv(6, 1234), kv(6, 4321))
    mx.eval([c.state for c in cache])
    assert not np.array_equal(as_np(cache[0].keys[..., :6, :]), before["0.keys"])
    for name, a in part.arrays.items():
        np.testing.assert_array_equal(as_np(a), before[name])


def test_a_slice_does_not_keep_the_whole_buffer_alive():
    cache = filled(4)  # KVCache grows in steps of 256 tokens
    part = seg.slice_kv(cache, 0, 2)
    buffers = sum(int(c.keys.nbytes + c.values.nbytes) for c in cache)
    before = mx.get_active_memory()
    del cache
    gc.collect()
    assert before - mx.get_active_memory() >= buffers
    assert part.nbytes == buffers * 2 // 256


def test_mutating_a_restored_cache_leaves_the_segment_alone():
    part = seg.slice_kv(filled(5), 0, 5)
    before = as_np(part.arrays["0.keys"])
    fresh = [KVCache() for _ in range(LAYERS)]
    seg.restore_kv(fresh, [part], 5)
    fresh[0].keys[..., 0:2, :] = mx.zeros((1, HEADS, 2, DIM))  # in-place slice assignment
    mx.eval(fresh[0].keys)
    np.testing.assert_array_equal(as_np(part.arrays["0.keys"]), before)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_numpy_round_trip_is_exact(dtype):
    part = seg.slice_kv(filled(5, dtype), 1, 5)
    arrays, dtypes, meta = seg.to_numpy(part)
    assert set(dtypes.values()) == {seg.dtype_name(dtype)}
    if dtype == mx.bfloat16:
        assert all(a.dtype == np.uint16 for a in arrays.values())
    back = seg.from_numpy(arrays, dtypes, meta)
    assert back.ntokens == 4 and back.classes is None
    for name, a in part.arrays.items():
        assert back.arrays[name].dtype == dtype
        assert mx.array_equal(back.arrays[name], a).item()


def test_from_numpy_rejects_unknown_dtype():
    arrays, dtypes, meta = seg.to_numpy(seg.slice_kv(filled(2), 0, 2))
    dtypes = {name: "nonsense" for name in dtypes}
    with pytest.raises(TypeError):
        seg.from_numpy(arrays, dtypes, meta)


def test_trimmable_only_when_every_layer_is_a_plain_kv_cache():
    assert seg.is_trimmable([KVCache(), KVCache()])
    assert not seg.is_trimmable([KVCache(), RotatingKVCache(max_size=8)])
    assert not seg.is_trimmable([ArraysCache(2)])
    assert not seg.is_trimmable([])


def rotating(tokens: int, window: int = 4) -> list[RotatingKVCache]:
    cache = [RotatingKVCache(max_size=window) for _ in range(LAYERS)]
    for c in cache:
        c.update_and_fetch(kv(tokens, 1), kv(tokens, 2))  # concat mode: prefill
        for t in range(3):  # in-place mode: decode steps that wrap the window
            c.update_and_fetch(kv(1, 3 + t), kv(1, 6 + t))
    mx.eval([c.state for c in cache])
    return cache


def assert_same_state(a: object, b: object) -> None:
    if isinstance(a, mx.array):
        assert isinstance(b, mx.array) and a.dtype == b.dtype
        assert mx.array_equal(a, b).item()
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip_rotating_and_state_caches():
    state = ArraysCache(2)
    state[0], state[1] = kv(1, 7, mx.bfloat16), kv(1, 8)
    cache = [*rotating(6), state, filled(3)[0]]
    snap = seg.snapshot(cache, 9)
    assert snap.classes == ["RotatingKVCache", "RotatingKVCache", "ArraysCache", "KVCache"]
    arrays, dtypes, meta = seg.to_numpy(snap)
    back = seg.from_numpy(arrays, dtypes, meta)
    fresh = [RotatingKVCache(max_size=4), RotatingKVCache(max_size=4), ArraysCache(2), KVCache()]
    seg.restore_state(fresh, back)
    for c, orig in zip(fresh[:3], cache[:3]):
        assert_same_state(c.state, orig.state)
    assert fresh[3].offset == 3
    np.testing.assert_array_equal(as_np(fresh[3].keys), as_np(cache[3].keys[..., :3, :]))


def test_checkpoint_restore_continues_like_the_original():
    cache = rotating(6)
    fresh = [RotatingKVCache(max_size=4) for _ in range(LAYERS)]
    seg.restore_state(fresh, seg.snapshot(cache, 9))
    step = kv(1, 77)
    for a, b in zip(cache, fresh):
        ka, _ = a.update_and_fetch(step, step)
        kb, _ = b.update_and_fetch(step, step)
        assert mx.array_equal(ka, kb).item()
        assert (a.offset, a._idx) == (b.offset, b._idx)


def test_checkpoint_is_a_copy_both_ways():
    cache = rotating(6)
    snap = seg.snapshot(cache, 9)
    before = as_np(snap.arrays["0.0"])
    for c in cache:  # decode steps rewrite the window's buffer in place
        c.update_and_fetch(kv(1, 50), kv(1, 51))
    mx.eval([c.state for c in cache])
    np.testing.assert_array_equal(as_np(snap.arrays["0.0"]), before)
    fresh = [RotatingKVCache(max_size=4) for _ in range(LAYERS)]
    seg.restore_state(fresh, snap)
    fresh[0].update_and_fetch(kv(1, 60), kv(1, 61))
    mx.eval(fresh[0].keys)
    np.testing.assert_array_equal(as_np(snap.arrays["0.0"]), before)


def test_checkpoint_round_trip_quantized_cache():
    cache = [QuantizedKVCache(group_size=32, bits=4)]
    x = mx.random.normal((1, 1, 5, 64), key=mx.random.key(5))
    cache[0].update_and_fetch(x, x)
    arrays, dtypes, meta = seg.to_numpy(seg.snapshot(cache, 5))
    fresh = [QuantizedKVCache()]
    seg.restore_state(fresh, seg.from_numpy(arrays, dtypes, meta))
    assert (fresh[0].offset, fresh[0].group_size, fresh[0].bits) == (5, 32, 4)
    step = mx.random.normal((1, 1, 1, 64), key=mx.random.key(6))
    a, _ = cache[0].update_and_fetch(step, step)
    b, _ = fresh[0].update_and_fetch(step, step)
    for part_a, part_b in zip(a, b):
        assert mx.array_equal(part_a, part_b).item()


def test_checkpoint_refuses_another_layout():
    snap = seg.snapshot(rotating(5), 8)
    with pytest.raises(ValueError):
        seg.restore_state([KVCache() for _ in range(LAYERS)], snap)


def test_cache_length():
    assert seg.cache_length(filled(7)) == 7
    assert seg.cache_length([ArraysCache(1)]) is None
