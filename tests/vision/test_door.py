"""The mlx-vlm door: loading needs neither opencv nor sounddevice, and a vision model
without mlx-vlm fails with how to install it (no model server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mlx_vlm")

from mlx_textgen.vision import loader
from mlx_textgen.vision.door import VisionUnavailable

# Imports of cv2 and sounddevice fail as they do on a machine without libGL and PortAudio.
_BLOCKED = textwrap.dedent(
    """
    import importlib.machinery, sys
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("cv2", "sounddevice", "mlx_audio"):
                return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
            raise OSError(f"{spec.name}: shared library missing")
        def exec_module(self, module):
            pass
    sys.meta_path.insert(0, Broken())
    """
)


def test_a_model_loads_without_opencv_and_sounddevice(tmp_path: Path) -> None:
    script = _BLOCKED + textwrap.dedent(
        f"""
        from pathlib import Path
        import mlx.core as mx
        from tests.vision_model import write_vision_model
        from mlx_textgen.vision.loader import load_vision_model, vision_spec
        import json
        d = write_vision_model(Path({str(tmp_path / "m")!r}), "qwen2_vl")
        spec = vision_spec(d, json.loads((d / "config.json").read_text()), None)
        model = load_vision_model(spec, float_weights=True)
        print("logits", model(mx.array([[1, 2, 3]])).shape)
        print("loaded", sorted(m for m in ("cv2", "sounddevice") if m in sys.modules))
        """
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "logits (1, 3, " in out.stdout and "loaded []" in out.stdout


def test_without_the_extra_a_vision_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda name: None)
    config = {"model_type": "qwen2_vl", "vision_config": {}, "image_token_id": 5}
    with pytest.raises(VisionUnavailable, match=r"pip install 'mlx-textgen\[vision\]'"):
        loader.vision_spec(Path("/models/qwen2-vl"), config, None)


def test_text_models_and_unknown_vision_architectures() -> None:
    assert loader.vision_spec(Path("/m"), {"model_type": "llama"}, None) is None
    with pytest.raises(VisionUnavailable, match="not supported"):
        loader.vision_spec(Path("/m"), {"model_type": "paligemma", "vision_config": {}}, None)


def test_the_http_side_of_vision_imports_no_mlx() -> None:
    script = (
        "import sys, mlx_textgen.api.vision_inputs, mlx_textgen.vision.prompt\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_vlm', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
