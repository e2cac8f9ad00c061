"""The one module that imports mlx-vlm.

mlx-vlm's package ``__init__`` imports its whole generation stack, which pulls opencv
(needs libGL) and sounddevice (needs PortAudio) at import time. Loading a model needs none
of that, so the package is registered without running its ``__init__`` and only the model
modules and the loader are imported. An mlx-vlm upgrade means editing this file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'mlx-textgen[vision]'"
_WINDOWED = ("qwen2_5_vl",)  # windowed vision attention with empty windows (vision/windows.py)


class VisionUnavailable(RuntimeError):
    """mlx-vlm (the `vision` extra) is not installed, or can't serve this architecture."""


def _package() -> None:
    if "mlx_vlm" in sys.modules:
        return
    spec = importlib.util.find_spec("mlx_vlm")
    if spec is None or spec.submodule_search_locations is None:
        raise VisionUnavailable(
            f"this is a vision model; serving it needs mlx-vlm: {INSTALL_HINT}"
        )
    pkg = types.ModuleType("mlx_vlm")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    sys.modules["mlx_vlm"] = pkg


def architecture(model_type: str) -> types.ModuleType:
    """mlx-vlm's module for `model_type` (``mlx_vlm.models.<arch>``)."""
    _package()
    try:
        module = importlib.import_module(f"mlx_vlm.models.{model_type}")
    except ImportError as exc:
        raise VisionUnavailable(f"mlx-vlm has no model {model_type!r}: {exc}") from None
    if model_type in _WINDOWED:
        from mlx_textgen.vision import windows

        windows.install(importlib.import_module(f"mlx_vlm.models.{model_type}.vision"))
    return module


def build_model(model_dir: Path) -> Any:
    """An mlx-vlm model of `model_dir`'s config with freshly initialised weights."""
    arch = architecture(json.loads((model_dir / "config.json").read_text())["model_type"])
    _package()
    utils = importlib.import_module("mlx_vlm.utils")
    config = json.loads((model_dir / "config.json").read_text())
    config.setdefault("vision_config", {})
    model_config = arch.ModelConfig.from_dict(config)
    model_config = utils.update_module_configs(
        model_config, arch, config, ["text", "vision", "perceiver", "projector", "audio"]
    )
    return arch.Model(model_config)


def load_model(model_dir: Path) -> Any:
    """mlx-vlm's model for `model_dir`, weights loaded (mlx-vlm's own loader: sanitizing
    and quantization as it does them)."""
    config = json.loads((model_dir / "config.json").read_text())
    architecture(config["model_type"])
    utils = importlib.import_module("mlx_vlm.utils")
    return utils.load_model(Path(model_dir), lazy=False)
