"""Chat content parts -> decoded images: data URLs, http(s) URLs (vision/fetch.py), and
local files under a directory the operator allows. Every failure is a `MediaError` naming
the part (``messages[i].content[j]``), which the API answers with a 400."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_textgen.vision.lru import SizedLRU
from mlx_textgen.vision.pixels import DecodedImage, ImageError, decode_image

IMAGE_TYPES = ("image_url", "input_image")
MAX_INLINE_BYTES = 20 * 2**20
MAX_IMAGES = 16  # per conversation: each costs a decode, the processor and the vision tower


class MediaError(ValueError):
    """A content part whose image can't be used: `message` for the client, `param` the part."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class MediaPolicy:
    """Where images may come from: local files only under `allowed_paths`; remote fetches
    under `fetch` (a vision.fetch.FetchPolicy; None: its defaults)."""

    allowed_paths: tuple[Path, ...] = ()
    fetch: Any = None
    _fetcher: Any = field(default=None, repr=False)

    def fetcher(self) -> Any:
        """The remote fetcher (SSRF-guarded, size-capped, cached); None without httpx
        (the `vision` extra installs it)."""
        if self._fetcher is None:
            try:
                from mlx_textgen.vision.fetch import Fetcher, FetchPolicy
            except ImportError:
                return None
            self._fetcher = Fetcher(self.fetch or FetchPolicy())
        return self._fetcher


def media_policy(config: Any) -> MediaPolicy:
    """The server's policy from its settings (the allowed directories resolved once)."""
    roots = tuple(Path(p).expanduser().resolve() for p in config.allowed_media_paths)
    try:
        from mlx_textgen.vision.fetch import FetchPolicy
    except ImportError:  # no httpx: image URLs are refused (see `_remote`)
        return MediaPolicy(roots)
    return MediaPolicy(roots, FetchPolicy.from_config(config))


def image_url_of(part: dict[str, Any], param: str) -> str:
    """The URL of an `image_url` or `input_image` part."""
    ref = part.get("image_url")
    if isinstance(ref, dict):
        ref = ref.get("url")
        detail = part["image_url"].get("detail")
        if detail not in (None, "auto", "low", "high"):
            raise MediaError(f"unknown image detail {detail!r}", f"{param}.image_url.detail")
    if part.get("type") == "input_image" and ref is None and part.get("file_id"):
        raise MediaError("images by file_id are not supported; send a URL", f"{param}.file_id")
    if not isinstance(ref, str) or not ref:
        raise MediaError("an image part needs an image URL", f"{param}.image_url")
    return ref


def _data_url(url: str, param: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise MediaError("a data URL needs a comma before its data", param)
    if len(payload) > MAX_INLINE_BYTES * 4 // 3 + 4:
        raise MediaError(f"the image is over {MAX_INLINE_BYTES >> 20} MiB", param)
    if not head.endswith(";base64"):
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("the data URL's base64 is invalid", param) from None


def _local_file(url: str, policy: MediaPolicy, param: str) -> bytes:
    raw = urllib.parse.unquote(urllib.parse.urlparse(url).path) if url.startswith("file:") else url
    if not policy.allowed_paths:
        raise MediaError("local image files are off on this server (--allowed-media-path)", param)
    try:
        path = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise MediaError("the image file does not exist", param) from None
    if not any(path.is_relative_to(root) for root in policy.allowed_paths):
        raise MediaError("the image file is outside the allowed media paths", param)
    if not path.is_file() or path.stat().st_size > MAX_INLINE_BYTES:
        raise MediaError("the image file is no regular file of at most 20 MiB", param)
    return path.read_bytes()


async def _remote(url: str, policy: MediaPolicy, param: str) -> bytes:
    fetcher = policy.fetcher()
    if fetcher is None:
        raise MediaError("image URLs are not supported by this server; send a data URL", param)
    from mlx_textgen.vision.fetch import FetchError

    try:
        return await fetcher.fetch(url)
    except FetchError as exc:
        raise MediaError(f"the image URL could not be fetched: {exc.reason}", param) from None


async def load_image(
    part: dict[str, Any], policy: MediaPolicy, param: str, max_pixels: int | None
) -> DecodedImage:
    """The decoded image of one content part (`param` names it in errors)."""
    url = image_url_of(part, param)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    data: bytes | None = None
    if scheme == "data":  # keyed by the URL itself: the same one again is not even decoded
        sent = url.encode("utf-8", "surrogatepass")
    elif scheme in ("http", "https"):
        sent = data = await _remote(url, policy, param)
    elif scheme == "file" or url.startswith("/"):
        sent = data = await asyncio.to_thread(_local_file, url, policy, param)
    else:
        raise MediaError("an image URL must be a data:, http(s): or file: URL", param)
    key = (_content_key(sent), max_pixels)
    if (seen := _decoded.get(key)) is not None:
        return seen
    if data is None:
        data = _data_url(url, param)
    try:  # decoding a large image takes a while: off the event loop
        image = await asyncio.to_thread(decode_image, data, max_pixels)
    except ImageError as exc:
        raise MediaError(str(exc), param) from None
    _decoded.put(key, image)
    return image


def _content_key(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()  # the fastest of hashlib here (SHA extensions)


DECODED_CACHE_BYTES = 128 * 2**20
# Decoded images by a hash of what was sent (a data URL, or the bytes of a file or download)
# and the downscale limit: conversations send their images again every turn, and decoding
# and hashing the pixels again took 10 ms for a 448 px PNG on a 2-core CPU (50 for 1024 px).
_decoded: SizedLRU[DecodedImage] = SizedLRU(
    DECODED_CACHE_BYTES, lambda d: d.image.width * d.image.height * 3
)
