"""The pixel hash and the image decoder's limits (no model)."""

from __future__ import annotations

import pytest

pytest.importorskip("PIL")

from mlx_textgen.vision.pixels import ImageError, decode_image
from tests.vision.images import encode, huge_png_header, pixels


def test_same_pixels_from_lossless_formats_hash_equal() -> None:
    arr = pixels(3, (40, 30))
    png = decode_image(encode(arr, "PNG"))
    bmp = decode_image(encode(arr, "BMP"))
    tiff = decode_image(encode(arr, "TIFF"))
    webp = decode_image(encode(arr, "WEBP", lossless=True))
    assert png.digest == bmp.digest == tiff.digest == webp.digest
    assert png.size == (40, 30)


def test_one_changed_pixel_changes_the_hash() -> None:
    arr = pixels(3, (40, 30))
    other = arr.copy()
    other[7, 11, 2] ^= 1
    assert decode_image(encode(arr)).digest != decode_image(encode(other)).digest


def test_same_bytes_other_shape_hash_differently() -> None:
    arr = pixels(4, (20, 10))
    flat = arr.reshape(10, 20, 3).reshape(20, 10, 3)  # the same bytes, transposed shape
    assert decode_image(encode(arr)).digest != decode_image(encode(flat)).digest


def test_a_lossy_jpeg_of_the_same_pixels_is_another_image() -> None:
    arr = pixels(5, (32, 32))
    assert decode_image(encode(arr, "JPEG", quality=80)).digest != decode_image(encode(arr)).digest


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"definitely not an image", "not an image"),
        (encode(pixels(1))[:80], "decoded"),
        (huge_png_header(), "too large"),
    ],
    ids=["empty", "not-an-image", "truncated", "oversized"],
)
def test_bad_images_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        decode_image(data)


def test_max_pixels_downscales_keeping_the_aspect() -> None:
    img = decode_image(encode(pixels(2, (200, 100))), max_pixels=50 * 25)
    assert img.size == (50, 25)
    assert decode_image(encode(pixels(2, (200, 100))), max_pixels=50 * 25).digest == img.digest
