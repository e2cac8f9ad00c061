"""Images sent again (the next turn of a conversation) are not decoded again; anything
different is (vision/media.py), and the shared bounded LRU keeps to its budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("PIL")

from mlx_textgen.vision import media
from mlx_textgen.vision.lru import SizedLRU
from tests.vision.images import data_url, encode, image_url, pixels


def _load(url: str, max_pixels: int | None = None, policy: media.MediaPolicy | None = None):
    part = {"type": "image_url", "image_url": {"url": url}}
    return asyncio.run(media.load_image(part, policy or media.MediaPolicy(), "p", max_pixels))


def test_the_same_image_is_decoded_once(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(media, "_decoded", SizedLRU(10 * 2**20, lambda d: 1))
    decoded: list[int] = []
    real = media.decode_image
    monkeypatch.setattr(media, "decode_image", lambda data, mp: decoded.append(mp) or real(data, mp))
    url = image_url(7, (40, 30))
    first = _load(url)
    assert _load(url) is first and decoded == [None]  # the same data URL: no decoding
    smaller = _load(url, max_pixels=100)  # another downscale limit: decoded for it
    assert smaller.image.size != first.image.size and decoded == [None, 100]
    other = _load(image_url(8, (40, 30)))
    assert other.digest != first.digest and len(decoded) == 3
    # A file is keyed by its bytes: another file with the same bytes is not decoded again.
    policy = media.MediaPolicy(allowed_paths=(tmp_path,))
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(encode(pixels(7, (40, 30))))
    from_file = _load(str(tmp_path / "a.png"), policy=policy)
    assert from_file.digest == first.digest and len(decoded) == 4
    assert _load(str(tmp_path / "b.png"), policy=policy) is from_file and len(decoded) == 4
    # A JPEG of other pixels under the same size is decoded.
    _load(data_url(encode(pixels(9, (40, 30)), "JPEG"), "image/jpeg"))
    assert len(decoded) == 5


def test_sized_lru_keeps_to_its_budget_least_recent_out() -> None:
    lru: SizedLRU[bytes] = SizedLRU(10, len)
    lru.put("a", b"xxxx")
    lru.put("b", b"xxxx")
    assert lru.get("a") == b"xxxx"  # a is now the most recent
    lru.put("c", b"xxxx")  # 12 > 10: b goes
    assert "b" not in lru and "a" in lru and "c" in lru and lru.nbytes == 8
    lru.put("huge", b"x" * 11)  # over the whole budget: not kept, nothing evicted
    assert "huge" not in lru and len(lru) == 2
    lru.put("a", b"x")  # replacing a value re-counts it
    assert lru.nbytes == 5
