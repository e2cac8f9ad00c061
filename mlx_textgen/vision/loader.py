"""The vision door for model loading: a model whose config has a vision tower is served
through mlx-vlm (never silently as text-only through mlx-lm); without mlx-vlm installed
it fails at load with how to install it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from mlx_textgen.vision.door import INSTALL_HINT, VisionUnavailable
from mlx_textgen.vision.prompt import SUPPORTED, VisionSpec

log = logging.getLogger("mlx_textgen.models")


def is_vision_config(config: dict[str, Any]) -> bool:
    """Whether a model's config.json declares a vision tower."""
    return isinstance(config.get("vision_config"), dict)


def vision_spec(model_dir: Path, config: dict[str, Any], max_image_pixels: int | None) -> VisionSpec | None:
    """The vision model's spec, None for a text model; VisionUnavailable when it can't be
    served (mlx-vlm missing, or an architecture we have not wired up)."""
    if not is_vision_config(config):
        return None
    model_type = str(config.get("model_type"))
    if importlib.util.find_spec("mlx_vlm") is None:
        raise VisionUnavailable(
            f"{model_dir.name} is a vision model ({model_type}); serving it needs mlx-vlm: "
            f"{INSTALL_HINT}"
        )
    if model_type not in SUPPORTED:
        raise VisionUnavailable(
            f"vision architecture {model_type!r} is not supported (supported: {', '.join(SUPPORTED)})"
        )
    token = config.get("image_token_id", config.get("image_token_index"))
    if not isinstance(token, int):
        raise VisionUnavailable(f"{model_dir.name}: config.json names no image_token_id")
    return VisionSpec(model_type, str(model_dir), token, max_image_pixels)


def load_vision_model(spec: VisionSpec, float_weights: bool) -> Any:
    """mlx-vlm's model for `spec`, wrapped for the engine (vision/model.py)."""
    from mlx_textgen import backend
    from mlx_textgen.vision import door
    from mlx_textgen.vision.model import VisionLanguageModel

    vlm = door.load_model(Path(spec.model_dir))
    if float_weights:
        backend.to_float_weights(vlm)
    log.info("vision model %s loaded through mlx-vlm%s", spec.model_type,
             " (float32 weights on the CPU)" if float_weights else "")
    return VisionLanguageModel(vlm, spec.model_type, spec.image_token_id)
