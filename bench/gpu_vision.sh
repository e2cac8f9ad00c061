#!/usr/bin/env bash
# The GPU run for vision (two device calls, after gpu-prep's three, on the same warm machine):
#   source .gpu/3/install.sh && bash bench/gpu_vision.sh check   carry [".gpu/3", ".gpu/v"]
#   source .gpu/3/install.sh && bash bench/gpu_vision.sh bench   carry [".gpu/3", ".gpu/v"]
# `check` writes the random Qwen2.5-VL-3B-shaped model and runs the vision tower with and
# without the empty-window fix (bench/vision_tower_check.py); `bench` runs bench/vision.py.
# .gpu/v holds the wheels the device image lacks for this run: mlx-vlm, what its server
# imports and openai (for the bench's client). gpu-prep wipes .gpu, so make it again with
#   pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .gpu/v \
#     mlx-vlm==0.7.10 mlx-audio==0.6.2 miniaudio python-multipart websockets cryptography \
#     cffi pycparser openai httpx2 httpcore2 jiter sniffio truststore
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/v/*.whl 2>&1 | grep -v -i warn || true
python3 -c "import mlx.core as mx, mlx_vlm; print('mlx', mx.__version__, 'mlx-vlm', mlx_vlm.__version__, mx.default_device())"
stage=${1:-bench}
shift || true
if [ "$stage" = check ]; then
  python3 -c "from pathlib import Path; from tests.vision_model import write_vision_model as w; d = Path('/tmp/vlm-3b'); (d / 'model.safetensors').exists() or w(d, 'qwen2_vl', shape='qwen2_5_vl_3b')"
  python3 bench/vision_tower_check.py --model-dir /tmp/vlm-3b "$@"
else
  python3 bench/vision.py --make-random qwen2_5_vl_3b --out /tmp/vlm-3b --rounds 2 "$@"
fi
