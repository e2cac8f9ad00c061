"""Bytes -> an RGB image within limits, and the hash that identifies its pixels.

The hash is taken over the decoded RGB bytes and the size, so the same pixels hash the same
whatever lossless file carried them (PNG, WebP lossless, ...); it keys the prompt cache and
the vision tower's output cache, so no image or base64 ever goes into an index.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

MAX_DECODE_PIXELS = 64 * 2**20  # refuse decompression bombs before decoding them


class ImageError(ValueError):
    """The bytes are no usable image; the message is for the client."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image (PIL) and the hash of its pixels."""

    image: Any
    digest: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def pixel_hash(image: Any) -> str:
    """sha256 over the size and the RGB bytes of `image` (converted to RGB if it isn't)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def decode_image(data: bytes, max_pixels: int | None = None) -> DecodedImage:
    """Decode `data` to RGB; larger than `max_pixels` it is downscaled (aspect kept)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise ImageError(f"the image is too large ({img.width}x{img.height})")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError("the image is too large to decode") from None
    except UnidentifiedImageError:
        raise ImageError("the data is not an image we can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the image could not be decoded ({exc})") from None
    rgb = img.convert("RGB")
    if max_pixels is not None and rgb.width * rgb.height > max_pixels:
        scale = (max_pixels / (rgb.width * rgb.height)) ** 0.5
        size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    return DecodedImage(rgb, pixel_hash(rgb))
