"""The vision tower on the device, with and without the empty-window fix (vision/windows.py).

Each case runs in its own process (a floating-point exception kills the process that hits
it): a zero-length attention call on its own, then one image through the engine's
`features` with mlx-vlm's window bounds as they come and with repeats dropped.

    python bench/vision_tower_check.py --model-dir /tmp/vlm-3b [--image-size 448]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EMPTY_ATTENTION = """
import mlx.core as mx
q = mx.zeros((1, 16, 0, 80), dtype=mx.bfloat16)
out = mx.fast.scaled_dot_product_attention(q, q, q, scale=1.0)
mx.eval(out)
print("zero-length attention:", out.shape)
"""

TOWER = """
import json, sys, time
from pathlib import Path
import mlx.core as mx
sys.path.insert(0, {root!r})
from mlx_textgen.vision import door, loader
from mlx_textgen.vision.model import VisionLanguageModel
from mlx_textgen.vision.pixels import decode_image
from mlx_textgen.vision.prompt import expand
from tests.vision.images import encode, pixels
d = Path({model_dir!r})
spec = loader.vision_spec(d, json.loads((d / "config.json").read_text()), None)
model = loader.load_vision_model(spec, float_weights=False)
if {raw!r}:
    import importlib
    cls = importlib.import_module("mlx_vlm.models.qwen2_5_vl.vision").VisionModel
    cls.get_window_index = getattr(cls.get_window_index, "__wrapped__", cls.get_window_index)
img = decode_image(encode(pixels(1, ({size}, {size})), "PNG"))
_, _, media = expand(spec, [spec.image_token_id], (), [img])
image = media.images[0]
print("image tokens", image.count, "grid", image.arrays["image_grid_thw"].tolist(), flush=True)
for i in range(3):
    model.tower = type(model.tower)()
    t = time.perf_counter()
    feats = model.features(image)
    mx.eval(feats)
    print(f"features {{feats.shape}} {{(time.perf_counter() - t) * 1e3:.1f}} ms", flush=True)
"""


def case(name: str, code: str) -> None:
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    tail = (out.stdout + out.stderr).strip().splitlines()[-12:]
    print(f"== {name}: exit {out.returncode} ({time.monotonic() - began:.0f}s)")
    print("\n".join("   " + line for line in tail), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--image-size", type=int, default=448)
    args = ap.parse_args()
    case("zero-length attention", EMPTY_ATTENTION)
    for raw in (False, True):
        code = TOWER.format(root=str(ROOT), model_dir=str(args.model_dir), raw=raw,
                            size=args.image_size)  # fmt: skip
        case("tower, " + ("mlx-vlm's window bounds" if raw else "repeats dropped"), code)


if __name__ == "__main__":
    main()
