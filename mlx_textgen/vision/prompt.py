"""A chat prompt with images, made ready for the engine (in the HTTP process; numpy only).

The chat template renders one placeholder per image; each is expanded to the tokens the
model's processor gives that image, and its pixel arrays are computed here, so only arrays
cross to the engine process (never URLs). The prompt the engine and the prompt cache see
has every image token replaced by an id derived from the image's pixel hash (ids at
``KEY_BASE`` and up, past any vocabulary): prefix matching is then image-aware by itself,
and the engine maps those ids back to the real image token when it embeds them.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlx_textgen.vision.pixels import DecodedImage
from mlx_textgen.vision.shared import SharedStore

KEY_BASE = 1 << 30
_KEY_SPAN = (1 << 30) - 1

# What the chat template's content gets for an image, by architecture family; `token` is
# the one the processor expands per image.
_PLACEHOLDERS = {
    "qwen2_vl": ("<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>"),
    "qwen2_5_vl": ("<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>"),
    "idefics3": ("<image>", "<image>"),
    "smolvlm": ("<image>", "<image>"),
}
SUPPORTED = tuple(_PLACEHOLDERS)
GRID_FAMILIES = ("qwen2_vl", "qwen2_5_vl")  # tokens per image from the processor's grid


@dataclass(frozen=True)
class VisionSpec:
    """What the HTTP process needs to prepare images for one vision model (picklable)."""

    model_type: str
    model_dir: str
    image_token_id: int
    max_image_pixels: int | None = None

    @property
    def placeholder(self) -> str:
        return _PLACEHOLDERS[self.model_type][0]

    @property
    def image_token(self) -> str:
        return _PLACEHOLDERS[self.model_type][1]


@dataclass
class PromptImage:
    """One image of a prompt: its hash, where its tokens are, and the processor's arrays."""

    digest: str
    start: int  # first image token in the prompt
    end: int  # one past its last (tokens between may be markers, as Idefics3's tiles have)
    count: int  # image tokens: as many feature rows as the vision tower gives it
    arrays: dict[str, Any] = field(repr=False, default_factory=dict)  # arrays or SharedArray


@dataclass
class VisionPrompt:
    """The images of one prompt, in order; rides on the engine Request (`media`)."""

    image_token_id: int
    images: list[PromptImage]

    def real_ids(self, keyed: list[int]) -> list[int]:
        """The prompt as the model reads it: keyed image ids back to the image token."""
        tok = self.image_token_id
        return [tok if t >= KEY_BASE else t for t in keyed]


def key_ids(digest: str, length: int) -> list[int]:
    """The `length` cache-key ids of an image with pixel hash `digest`."""
    h = int(digest[:15], 16)
    return [KEY_BASE + (h + k) % _KEY_SPAN for k in range(length)]


_processors: dict[str, Any] = {}
_lock = threading.Lock()


def processor(spec: VisionSpec) -> Any:
    """The model's image processor (grid families) or full HF processor, loaded once."""
    with _lock:
        if spec.model_dir not in _processors:
            import transformers

            transformers.logging.set_verbosity_error()
            cls = transformers.AutoImageProcessor if spec.model_type in GRID_FAMILIES else (
                transformers.AutoProcessor
            )
            _processors[spec.model_dir] = cls.from_pretrained(Path(spec.model_dir))
        return _processors[spec.model_dir]


def warm(spec: VisionSpec) -> None:
    """Load the processor in the background (importing transformers takes seconds), so the
    first image request doesn't wait for it."""
    threading.Thread(target=processor, args=(spec,), name="vision-processor", daemon=True).start()


PROCESSED_CACHE_BYTES = 128 * 2**20
# The processor's output for recent images by (model, pixel hash), pixel arrays in shared
# memory (vision/shared.py): the next turn of a conversation sends its images again, and
# they need not be processed again (a 448 px image took 15 ms on a 2-core CPU) nor their
# arrays sent through the engine's pipe again.
_processed = SharedStore(PROCESSED_CACHE_BYTES)


def _one_image(spec: VisionSpec, img: DecodedImage) -> tuple[list[int] | int, dict[str, Any]]:
    """The expansion of one placeholder (token ids, or a count of image tokens) and arrays
    (shared handles for big ones). Pins the image's entry: the caller unpins it."""
    key = (spec.model_dir, img.digest)
    if (done := _processed.get(key)) is not None:
        return done
    expansion, arrays = _process(spec, img)
    return expansion, _processed.put(key, expansion, arrays)


def _process(spec: VisionSpec, img: DecodedImage) -> tuple[list[int] | int, dict[str, np.ndarray]]:
    proc = processor(spec)
    if spec.model_type in GRID_FAMILIES:
        out = proc(images=[img.image], return_tensors="np")
        merge = int(getattr(proc, "merge_size", 2))
        arrays = {"pixel_values": np.asarray(out["pixel_values"], np.float32),
                  "image_grid_thw": np.asarray(out["image_grid_thw"], np.int64)}  # fmt: skip
        return int(np.prod(arrays["image_grid_thw"])) // (merge * merge), arrays
    out = proc(text=spec.image_token, images=[img.image], return_tensors="np")
    arrays = {k: np.asarray(v) for k, v in out.items() if k.startswith("pixel")}
    return [int(t) for t in np.asarray(out["input_ids"])[0]], arrays


def expand(
    spec: VisionSpec, ids: list[int], boundaries: tuple[int, ...], images: list[DecodedImage]
) -> tuple[list[int], tuple[int, ...], VisionPrompt]:
    """Expand each image placeholder in `ids` (one per image, in order) and key its image
    tokens by pixel hash; `boundaries` move with the expansion. ValueError when the
    placeholders and the images don't pair up."""
    where = [i for i, t in enumerate(ids) if t == spec.image_token_id]
    if len(where) != len(images):
        raise ValueError(f"the prompt has {len(where)} image placeholders for {len(images)} images")
    out: list[int] = []
    shifts: list[tuple[int, int]] = []  # (original position, tokens added before what follows)
    prompt_images: list[PromptImage] = []
    pins: list[tuple[str, str]] = []
    prev = 0
    try:
        for pos, img in zip(where, images):
            out += ids[prev:pos]
            expansion, arrays = _one_image(spec, img)
            pins.append((spec.model_dir, img.digest))
            prev = _place(spec, img, pos, expansion, arrays, out, shifts, prompt_images)
    except BaseException:
        _processed.unpin(pins)
        raise
    out += ids[prev:]

    def moved(b: int) -> int:
        return b + max((s for p, s in shifts if p < b), default=0)

    media = VisionPrompt(spec.image_token_id, prompt_images)
    weakref.finalize(media, _processed.unpin, pins)  # its images stay while it is alive
    return out, tuple(moved(b) for b in boundaries), media


def _place(
    spec: VisionSpec, img: DecodedImage, pos: int, expansion: list[int] | int,
    arrays: dict[str, Any], out: list[int], shifts: list[tuple[int, int]],
    prompt_images: list[PromptImage],
) -> int:
    """Append one image's keyed tokens to `out`; the index after its placeholder."""
    if isinstance(expansion, int):
        expansion = [spec.image_token_id] * expansion
    marks = [k for k, t in enumerate(expansion) if t == spec.image_token_id]
    keys = iter(key_ids(img.digest, len(marks)))
    at = len(out)
    out += [next(keys) if t == spec.image_token_id else t for t in expansion]
    prompt_images.append(
        PromptImage(img.digest, at + marks[0], at + marks[-1] + 1, len(marks), arrays)
    )
    shifts.append((pos, len(out) - pos - 1))
    return pos + 1
