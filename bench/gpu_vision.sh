#!/usr/bin/env bash
# The GPU run for vision (one device call, after gpu-prep's three):
#   source .gpu/3/install.sh && bash bench/gpu_vision.sh     carry [".gpu/3", ".gpu/v"]
# .gpu/v holds the wheels the device image lacks for this run: mlx-vlm, what its server
# imports (mlx-audio, miniaudio, python-multipart, websockets) and openai (for the bench's
# client), downloaded for the device's Python with `pip download --no-deps`.
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/v/*.whl 2>&1 | grep -v -i warn || true
python3 -c "import mlx.core as mx, mlx_vlm; print('mlx', mx.__version__, 'mlx-vlm', mlx_vlm.__version__, mx.default_device())"
python3 bench/vision.py --make-random qwen2_5_vl_3b --out /tmp/vlm-3b --rounds 2 "$@"
