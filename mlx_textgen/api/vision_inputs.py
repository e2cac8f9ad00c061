"""Images in chat messages, for a vision model: content parts -> decoded images and
template placeholders, then the rendered prompt's placeholders expanded (vision/prompt.py).
Runs in the HTTP process with PIL and numpy only; a bad image is a 400 naming its part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.errors import bad_request
from mlx_textgen.api.protocol import ChatMessage, ContentPart
from mlx_textgen.vision.media import IMAGE_TYPES, MAX_IMAGES, MediaError, MediaPolicy, load_image
from mlx_textgen.vision.pixels import DecodedImage

if TYPE_CHECKING:
    from mlx_textgen.models.loader import ModelInfo


@dataclass
class ChatImages:
    """A request's conversations with image parts turned into placeholders, and the images."""

    conversations: list[list[ChatMessage]]
    images: list[list[DecodedImage]]  # per conversation, in prompt order

    async def expand(
        self, info: ModelInfo, rendered: list[tuple[list[int], tuple[int, ...], bool]]
    ) -> tuple[list[tuple[list[int], tuple[int, ...], bool]], list[Any]]:
        """Each prompt with its placeholders expanded and image tokens keyed; the media
        (None for a prompt without images) that goes with each engine request."""
        from mlx_textgen.vision.prompt import expand

        out, media = [], []
        for (ids, bounds, opens), images in zip(rendered, self.images):
            if not images:
                out.append((ids, bounds, opens))
                media.append(None)
                continue
            try:
                ids2, bounds2, vp = await run_in_threadpool(expand, info.vision, ids, bounds, images)
            except ValueError as exc:
                raise bad_request(f"{exc} (image tokens in text are not allowed)", "messages") from None
            out.append((ids2, bounds2, opens))
            media.append(vp)
        return out, media


async def chat_images(
    info: ModelInfo, conversations: list[list[ChatMessage]], policy: MediaPolicy | None
) -> ChatImages | None:
    """None for a text model (its own check refuses image parts); else the images."""
    spec = info.vision
    if spec is None:
        return None
    policy = policy or MediaPolicy()
    convs, images = [], []
    many = len(conversations) > 1
    for c, conversation in enumerate(conversations):
        count = sum(
            isinstance(m.content, list) and sum(p.type in IMAGE_TYPES for p in m.content)
            for m in conversation
        )
        if count > MAX_IMAGES:
            raise bad_request(f"at most {MAX_IMAGES} images per conversation, got {count}", "messages")
        found: list[DecodedImage] = []
        msgs = []
        for i, msg in enumerate(conversation):
            if not isinstance(msg.content, list):
                msgs.append(msg)
                continue
            parts = []
            for j, part in enumerate(msg.content):
                if part.type not in IMAGE_TYPES:
                    parts.append(part)
                    continue
                param = f"messages{f'[{c}]' if many else ''}[{i}].content[{j}]"
                try:
                    found.append(
                        await load_image(part.model_dump(), policy, param, spec.max_image_pixels)
                    )
                except MediaError as exc:
                    raise bad_request(f"{exc.param}: {exc.message}", exc.param) from None
                parts.append(ContentPart(type="text", text=spec.placeholder))
            msgs.append(msg.model_copy(update={"content": parts}))
        convs.append(msgs)
        images.append(found)
    return ChatImages(convs, images)
